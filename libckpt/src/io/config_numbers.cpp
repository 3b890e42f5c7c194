#include "qs/ckpt/io/config_numbers.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

constexpr std::uint64_t kLayers = 4096;
constexpr std::uint64_t kWidth = std::uint64_t{1} << 20;       // hidden and head sizes, ranks
constexpr std::uint64_t kCount = 65536;                        // heads, experts, groups
constexpr std::uint64_t kVocabulary = std::uint64_t{1} << 24;  // vocabulary, token ids, top-k
constexpr std::uint64_t kPositions = std::uint64_t{1} << 30;

// Minimum 1 where no model can have zero (the layout check reports the finer rules, such as
// "n_routed_experts > 0 when there are MoE layers", as validation problems).
constexpr std::array kRanges{
    ConfigNumberRange{"vocab_size", 1, kVocabulary},
    ConfigNumberRange{"hidden_size", 1, kWidth},
    ConfigNumberRange{"intermediate_size", 0, kWidth},
    ConfigNumberRange{"moe_intermediate_size", 0, kWidth},
    ConfigNumberRange{"num_hidden_layers", 1, kLayers},
    ConfigNumberRange{"first_k_dense_replace", 0, kLayers},
    ConfigNumberRange{"moe_layer_freq", 0, kLayers},
    ConfigNumberRange{"decoder_sparse_step", 0, kLayers},
    ConfigNumberRange{"num_nextn_predict_layers", 0, kLayers},
    ConfigNumberRange{"num_attention_heads", 1, kCount},
    ConfigNumberRange{"num_key_value_heads", 1, kCount},
    ConfigNumberRange{"q_lora_rank", 0, kWidth},
    ConfigNumberRange{"kv_lora_rank", 0, kWidth},
    ConfigNumberRange{"qk_nope_head_dim", 0, kWidth},
    ConfigNumberRange{"qk_rope_head_dim", 0, kWidth},
    ConfigNumberRange{"qk_head_dim", 0, kWidth},
    ConfigNumberRange{"head_dim", 0, kWidth},
    ConfigNumberRange{"v_head_dim", 0, kWidth},
    ConfigNumberRange{"index_n_heads", 0, kCount},
    ConfigNumberRange{"index_head_dim", 0, kWidth},
    ConfigNumberRange{"index_topk", 0, kVocabulary},
    ConfigNumberRange{"n_routed_experts", 0, kCount},
    ConfigNumberRange{"num_experts", 0, kCount},
    ConfigNumberRange{"n_shared_experts", 0, kCount},
    ConfigNumberRange{"num_experts_per_tok", 0, kCount},
    ConfigNumberRange{"n_group", 0, kCount},
    ConfigNumberRange{"topk_group", 0, kCount},
    ConfigNumberRange{"max_position_embeddings", 0, kPositions},
    ConfigNumberRange{"bos_token_id", 0, kVocabulary - 1},
    ConfigNumberRange{"eos_token_id", 0, kVocabulary - 1},
    ConfigNumberRange{"pad_token_id", 0, kVocabulary - 1},
};

bool in_range(const nlohmann::json& value, const ConfigNumberRange& range) {
  if (value.is_number_unsigned()) {
    const auto number = value.get<std::uint64_t>();
    return number >= range.min && number <= range.max;
  }
  // Negative integers are is_number_integer but not unsigned; floats (1e12, 64.0), strings,
  // booleans, arrays and objects are not integers at all.
  return false;
}

void check(const nlohmann::json& value, const ConfigNumberRange& range, const std::string& file) {
  const bool valid = in_range(value, range) ||
                     (range.key == "eos_token_id" && value.is_array() &&
                      std::all_of(value.begin(), value.end(),
                                  [&](const nlohmann::json& id) { return in_range(id, range); }));
  if (!valid)
    throw_bad_input("config.invalid_value",
                    fmt::format("\"{}\" is {}, expected an integer in [{}, {}]", range.key,
                                value.dump().substr(0, 64), range.min, range.max),
                    file);
}

}  // namespace

std::span<const ConfigNumberRange> config_number_ranges() { return kRanges; }

void check_config_numbers(const nlohmann::json& config, const std::string& file) {
  if (!config.is_object()) return;
  for (const ConfigNumberRange& range : kRanges) {
    const auto at = config.find(std::string(range.key));
    if (at != config.end() && !at->is_null()) check(*at, range, file);
  }
}

}  // namespace qs
