// The GLM-5 (glm_moe_dsa) checkpoint layout as a function of config.json: every tensor's name,
// shape and dtype in the order of the released checkpoints (docs/models/glm_moe_dsa.md, "Tensor
// names and shapes"). synth generates it; validate checks real checkpoints against it.

#include "qs/ckpt/model/glm5_layout.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

using Spec = Glm5Dimensions;

// ---------------------------------------------------------------------------------------------
// Validation: one row per requirement, so an error names the rule that failed.

bool has_dense_layers(const Spec& s) { return s.first_k_dense_replace > 0; }
bool has_moe_layers(const Spec& s) {
  return s.first_k_dense_replace < s.num_hidden_layers || s.num_nextn_predict_layers > 0;
}

struct SpecRequirement {
  bool (*holds)(const Spec&);
  std::string_view text;
};

// Real GLM-5 has 59,870 tensors; a config implying more than this is not a model we can list
// (the layout is built in memory before a checkpoint is compared with it).
constexpr std::uint64_t kMaxLayoutTensors = 1'000'000;
std::uint64_t saturating_tensor_count(const Spec& s);

constexpr SpecRequirement kSpecRequirements[] = {
    {[](const Spec& s) { return s.hidden_size > 0; }, "hidden_size > 0"},
    {[](const Spec& s) { return s.num_hidden_layers > 0; }, "num_hidden_layers > 0"},
    {[](const Spec& s) { return s.first_k_dense_replace <= s.num_hidden_layers; },
     "first_k_dense_replace <= num_hidden_layers"},
    {[](const Spec& s) { return s.num_attention_heads > 0; }, "num_attention_heads > 0"},
    {[](const Spec& s) { return s.q_lora_rank > 0 && s.kv_lora_rank > 0; },
     "q_lora_rank > 0 and kv_lora_rank > 0"},
    {[](const Spec& s) { return s.qk_nope_head_dim > 0 && s.v_head_dim > 0; },
     "qk_nope_head_dim > 0 and v_head_dim > 0"},
    {[](const Spec& s) { return s.qk_rope_head_dim > 0 && s.qk_rope_head_dim % 2 == 0; },
     "qk_rope_head_dim even and > 0 (RoPE rotates pairs)"},
    {[](const Spec& s) { return s.index_n_heads > 0; }, "index_n_heads > 0"},
    {[](const Spec& s) { return s.index_head_dim > s.qk_rope_head_dim; },
     "index_head_dim > qk_rope_head_dim (the indexer splits [rope | nope])"},
    {[](const Spec& s) { return s.index_topk > 0; }, "index_topk > 0"},
    {[](const Spec& s) { return !has_dense_layers(s) || s.intermediate_size > 0; },
     "intermediate_size > 0 when there are dense layers"},
    {[](const Spec& s) {
       return !has_moe_layers(s) || (s.n_routed_experts > 0 && s.moe_intermediate_size > 0);
     },
     "n_routed_experts > 0 and moe_intermediate_size > 0 when there are MoE layers"},
    {[](const Spec& s) {
       return !has_moe_layers(s) ||
              (s.num_experts_per_tok > 0 && s.num_experts_per_tok <= s.n_routed_experts);
     },
     "0 < num_experts_per_tok <= n_routed_experts"},
    {[](const Spec& s) {
       return s.n_group > 0 && s.topk_group > 0 && s.topk_group <= s.n_group &&
              (!has_moe_layers(s) || s.n_routed_experts % s.n_group == 0);
     },
     "0 < topk_group <= n_group, n_group divides n_routed_experts"},
    {[](const Spec& s) { return s.max_position_embeddings > 0; }, "max_position_embeddings > 0"},
    {[](const Spec& s) { return saturating_tensor_count(s) <= kMaxLayoutTensors; },
     "at most 1,000,000 tensors in all (layers x experts)"},
    {[](const Spec& s) {
       std::size_t specials =
           s.eos_token_ids.size() + (s.bos_token_id ? 1 : 0) + (s.pad_token_id ? 1 : 0);
       return s.vocab_size > 0 && s.vocab_size >= specials;
     },
     "vocab_size > 0 and large enough for the special tokens"},
};

// ---------------------------------------------------------------------------------------------
// Tensor layout. Each tensor comes from a template row: its name within its block, dtype, the
// kind of values it holds and its shape as a function of the spec.

using ShapeOf = Shape (*)(const Spec&);

struct TensorTemplate {
  std::string_view suffix;
  DType dtype;
  TensorKind kind;
  ShapeOf shape;
};

using enum TensorKind;

// One row per tensor: kept compact by hand, clang-format would spread each over four lines.
// clang-format off
constexpr TensorTemplate kHeadTensors[] = {
    {"model.embed_tokens.weight", DType::BF16, Embedding,
     [](const Spec& s) { return Shape{s.vocab_size, s.hidden_size}; }},
};

// docs/models/glm_moe_dsa.md, "Attention", in the order of the released checkpoints.
constexpr TensorTemplate kAttentionTensors[] = {
    {"input_layernorm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.hidden_size}; }},
    {"self_attn.q_a_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.q_lora_rank, s.hidden_size}; }},
    {"self_attn.q_a_layernorm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.q_lora_rank}; }},
    {"self_attn.q_b_proj.weight", DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.num_attention_heads * (s.qk_nope_head_dim + s.qk_rope_head_dim),
                    s.q_lora_rank};
     }},
    {"self_attn.kv_a_proj_with_mqa.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.kv_lora_rank + s.qk_rope_head_dim, s.hidden_size}; }},
    {"self_attn.kv_a_layernorm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.kv_lora_rank}; }},
    {"self_attn.kv_b_proj.weight", DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.num_attention_heads * (s.qk_nope_head_dim + s.v_head_dim), s.kv_lora_rank};
     }},
    {"self_attn.o_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, s.num_attention_heads * s.v_head_dim}; }},
    {"self_attn.indexer.wq_b.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.index_n_heads * s.index_head_dim, s.q_lora_rank}; }},
    {"self_attn.indexer.wk.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.index_head_dim, s.hidden_size}; }},
    {"self_attn.indexer.k_norm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.index_head_dim}; }},
    {"self_attn.indexer.k_norm.bias", DType::BF16, NormBias,
     [](const Spec& s) { return Shape{s.index_head_dim}; }},
    {"self_attn.indexer.weights_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.index_n_heads, s.hidden_size}; }},
    {"post_attention_layernorm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.hidden_size}; }},
};

constexpr TensorTemplate kDenseMlpTensors[] = {
    {"mlp.gate_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.intermediate_size, s.hidden_size}; }},
    {"mlp.up_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.intermediate_size, s.hidden_size}; }},
    {"mlp.down_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, s.intermediate_size}; }},
};

constexpr TensorTemplate kRouterTensors[] = {
    {"mlp.gate.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.n_routed_experts, s.hidden_size}; }},
    // F32 in the official BF16 release: HF keeps it in fp32 strictly
    // (docs/models/glm_moe_dsa.md, "MLP and MoE").
    {"mlp.gate.e_score_correction_bias", DType::F32, RouterBias,
     [](const Spec& s) { return Shape{s.n_routed_experts}; }},
};

// Below "mlp.experts.{e}.".
constexpr TensorTemplate kExpertTensors[] = {
    {"gate_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.moe_intermediate_size, s.hidden_size}; }},
    {"up_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.moe_intermediate_size, s.hidden_size}; }},
    {"down_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, s.moe_intermediate_size}; }},
};

constexpr TensorTemplate kSharedExpertTensors[] = {
    {"mlp.shared_experts.gate_proj.weight", DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.moe_intermediate_size * s.n_shared_experts, s.hidden_size};
     }},
    {"mlp.shared_experts.up_proj.weight", DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.moe_intermediate_size * s.n_shared_experts, s.hidden_size};
     }},
    {"mlp.shared_experts.down_proj.weight", DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.hidden_size, s.moe_intermediate_size * s.n_shared_experts};
     }},
};

// docs/models/glm_moe_dsa.md, "MTP layer": what an MTP layer has beyond a MoE decoder layer. No
// embed_tokens or shared_head.head: like GLM-5, those are shared with the main model.
constexpr TensorTemplate kMtpTensors[] = {
    {"enorm.weight", DType::BF16, NormWeight, [](const Spec& s) { return Shape{s.hidden_size}; }},
    {"hnorm.weight", DType::BF16, NormWeight, [](const Spec& s) { return Shape{s.hidden_size}; }},
    {"eh_proj.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, 2 * s.hidden_size}; }},
    {"shared_head.norm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.hidden_size}; }},
};

constexpr TensorTemplate kTailTensors[] = {
    {"model.norm.weight", DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.hidden_size}; }},
    {"lm_head.weight", DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.vocab_size, s.hidden_size}; }},
};
// clang-format on

// glm5_layout's tensor count without building it; saturates at UINT64_MAX, so it is safe on
// any dimensions, even ones validate_dimensions has not accepted yet.
std::uint64_t saturating_tensor_count(const Spec& s) {
  constexpr std::uint64_t kSaturated = UINT64_MAX;
  auto add = [](std::uint64_t a, std::uint64_t b) {
    std::uint64_t sum = 0;
    return __builtin_add_overflow(a, b, &sum) ? kSaturated : sum;
  };
  auto multiply = [](std::uint64_t a, std::uint64_t b) {
    std::uint64_t product = 0;
    return __builtin_mul_overflow(a, b, &product) ? kSaturated : product;
  };
  const std::uint64_t layers = add(s.num_hidden_layers, s.num_nextn_predict_layers);
  const std::uint64_t dense = std::min(s.first_k_dense_replace, layers);
  const std::uint64_t moe_layer =
      add(add(std::size(kRouterTensors), multiply(s.n_routed_experts, std::size(kExpertTensors))),
          s.n_shared_experts > 0 ? std::size(kSharedExpertTensors) : 0);
  std::uint64_t count = std::size(kHeadTensors) + std::size(kTailTensors);
  count = add(count, multiply(layers, std::size(kAttentionTensors)));
  count = add(count, multiply(dense, std::size(kDenseMlpTensors)));
  count = add(count, multiply(layers - dense, moe_layer));
  count = add(count, multiply(s.num_nextn_predict_layers, std::size(kMtpTensors)));
  return count;
}

void append(std::vector<LayoutTensor>& out, const Spec& spec, std::string_view prefix,
            std::span<const TensorTemplate> templates) {
  for (const auto& row : templates)
    out.push_back(
        {{fmt::format("{}{}", prefix, row.suffix), row.dtype, row.shape(spec)}, row.kind});
}

nlohmann::ordered_json json_number(double value) {
  // 1000000 rather than 1000000.0, as Python's json writes an int-valued config entry.
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 9.0e15)
    return static_cast<std::int64_t>(value);
  return value;
}

// Reads an unsigned config key; absent keys use `fallback` when given, else are an error.
std::uint64_t config_unsigned(const nlohmann::json& config, const char* key,
                              std::optional<std::uint64_t> fallback, const std::string& file) {
  if (!config.contains(key)) {
    if (fallback) return *fallback;
    throw_bad_input("config.missing_key", fmt::format("config.json has no \"{}\"", key), file);
  }
  const auto& value = config[key];
  if (!value.is_number_unsigned())
    throw_bad_input("config.invalid_value",
                    fmt::format("\"{}\" is {}, expected a non-negative integer", key, value.dump()),
                    file);
  return value.get<std::uint64_t>();
}

}  // namespace

void validate_dimensions(const Glm5Dimensions& spec) {
  for (const auto& requirement : kSpecRequirements)
    if (!requirement.holds(spec))
      throw_bad_input("layout.invalid_dimensions",
                      fmt::format("impossible model dimensions: need {}", requirement.text));
}

Glm5Dimensions dimensions_from_config(const nlohmann::json& config, const std::string& file) {
  if (!config.is_object())
    throw_bad_input("config.missing", "no config.json object to read dimensions from", file);
  Glm5Dimensions d;
  auto required = [&](const char* key) { return config_unsigned(config, key, std::nullopt, file); };
  auto optional = [&](const char* key, std::uint64_t fallback) {
    return config_unsigned(config, key, fallback, file);
  };
  d.vocab_size = required("vocab_size");
  d.hidden_size = required("hidden_size");
  d.num_hidden_layers = required("num_hidden_layers");
  d.first_k_dense_replace = optional("first_k_dense_replace", 0);
  d.intermediate_size = d.first_k_dense_replace > 0 ? required("intermediate_size")
                                                    : optional("intermediate_size", 0);
  d.moe_intermediate_size = required("moe_intermediate_size");
  d.num_nextn_predict_layers = optional("num_nextn_predict_layers", 0);
  d.num_attention_heads = required("num_attention_heads");
  d.q_lora_rank = required("q_lora_rank");
  d.kv_lora_rank = required("kv_lora_rank");
  d.qk_nope_head_dim = required("qk_nope_head_dim");
  d.qk_rope_head_dim = required("qk_rope_head_dim");
  d.v_head_dim = required("v_head_dim");
  d.index_n_heads = required("index_n_heads");
  d.index_head_dim = required("index_head_dim");
  d.index_topk = required("index_topk");
  d.n_routed_experts = required("n_routed_experts");
  d.n_shared_experts = optional("n_shared_experts", 0);
  d.num_experts_per_tok = required("num_experts_per_tok");
  d.n_group = optional("n_group", 1);
  d.topk_group = optional("topk_group", 1);
  d.max_position_embeddings = optional("max_position_embeddings", 1);
  validate_dimensions(d);
  return d;
}

SpecialTokenIds special_token_ids(const Glm5Dimensions& spec) {
  std::vector<std::uint64_t> outside;
  auto note = [&](std::uint64_t id) {
    if (id >= spec.vocab_size) outside.push_back(id);
  };
  if (spec.bos_token_id) note(*spec.bos_token_id);
  for (auto id : spec.eos_token_ids) note(id);
  if (spec.pad_token_id) note(*spec.pad_token_id);
  std::sort(outside.begin(), outside.end());
  outside.erase(std::unique(outside.begin(), outside.end()), outside.end());
  auto fit = [&](std::uint64_t id) {
    auto at = std::lower_bound(outside.begin(), outside.end(), id);
    if (at == outside.end() || *at != id) return id;
    return spec.vocab_size - outside.size() + static_cast<std::uint64_t>(at - outside.begin());
  };
  SpecialTokenIds ids;
  if (spec.bos_token_id) ids.bos = fit(*spec.bos_token_id);
  for (auto id : spec.eos_token_ids) ids.eos.push_back(fit(id));
  if (spec.pad_token_id) ids.pad = fit(*spec.pad_token_id);
  return ids;
}

nlohmann::ordered_json config_json(const Glm5Dimensions& spec) {
  validate_dimensions(spec);
  const SpecialTokenIds tokens = special_token_ids(spec);
  nlohmann::ordered_json config;
  config["architectures"] = {"GlmMoeDsaForCausalLM"};
  config["model_type"] = "glm_moe_dsa";
  config["dtype"] = "bfloat16";
  config["vocab_size"] = spec.vocab_size;
  config["hidden_size"] = spec.hidden_size;
  config["intermediate_size"] = spec.intermediate_size;
  config["moe_intermediate_size"] = spec.moe_intermediate_size;
  config["num_hidden_layers"] = spec.num_hidden_layers;
  config["first_k_dense_replace"] = spec.first_k_dense_replace;
  config["moe_layer_freq"] = 1;
  config["num_nextn_predict_layers"] = spec.num_nextn_predict_layers;
  config["num_attention_heads"] = spec.num_attention_heads;
  config["num_key_value_heads"] = spec.num_attention_heads;  // MLA expands to MHA
  config["q_lora_rank"] = spec.q_lora_rank;
  config["kv_lora_rank"] = spec.kv_lora_rank;
  config["qk_nope_head_dim"] = spec.qk_nope_head_dim;
  config["qk_rope_head_dim"] = spec.qk_rope_head_dim;
  config["qk_head_dim"] = spec.qk_nope_head_dim + spec.qk_rope_head_dim;
  // Equal to qk_rope_head_dim, as in GLM-5: some transformers builds alias head_dim onto the
  // rope dim and would silently change it otherwise (docs/models/glm_moe_dsa.md, "Config
  // pitfalls").
  config["head_dim"] = spec.qk_rope_head_dim;
  config["v_head_dim"] = spec.v_head_dim;
  config["index_n_heads"] = spec.index_n_heads;
  config["index_head_dim"] = spec.index_head_dim;
  config["index_topk"] = spec.index_topk;
  config["indexer_rope_interleave"] = true;
  config["rope_interleave"] = true;
  config["n_routed_experts"] = spec.n_routed_experts;
  config["n_shared_experts"] = spec.n_shared_experts;
  config["num_experts_per_tok"] = spec.num_experts_per_tok;
  config["n_group"] = spec.n_group;
  config["topk_group"] = spec.topk_group;
  config["routed_scaling_factor"] = json_number(spec.routed_scaling_factor);
  config["norm_topk_prob"] = true;
  // vLLM defaults to softmax and only creates e_score_correction_bias for noaux_tc.
  config["scoring_func"] = "sigmoid";
  config["topk_method"] = "noaux_tc";
  config["rope_parameters"] = {{"rope_theta", json_number(spec.rope_theta)},
                               {"rope_type", "default"}};
  config["rope_theta"] = json_number(spec.rope_theta);
  config["max_position_embeddings"] = spec.max_position_embeddings;
  config["rms_norm_eps"] = spec.rms_norm_eps;
  config["hidden_act"] = "silu";
  config["attention_bias"] = false;
  config["attention_dropout"] = 0.0;
  config["tie_word_embeddings"] = false;
  if (tokens.bos) config["bos_token_id"] = *tokens.bos;
  config["eos_token_id"] = tokens.eos;
  config["pad_token_id"] = tokens.pad ? nlohmann::ordered_json(*tokens.pad) : nullptr;
  config["initializer_range"] = 0.02;
  config["use_cache"] = true;
  config["ep_size"] = 1;
  config["pretraining_tp"] = 1;
  config["transformers_version"] = "5.0.2.dev0";
  return config;
}

nlohmann::ordered_json generation_config_json(const Glm5Dimensions& spec) {
  const SpecialTokenIds tokens = special_token_ids(spec);
  nlohmann::ordered_json config;
  config["_from_model_config"] = true;
  if (tokens.bos) config["bos_token_id"] = *tokens.bos;
  config["eos_token_id"] = tokens.eos;
  if (tokens.pad) config["pad_token_id"] = *tokens.pad;
  config["transformers_version"] = "5.0.2.dev0";
  return config;
}

std::vector<LayoutTensor> glm5_layout(const Glm5Dimensions& spec) {
  validate_dimensions(spec);
  std::vector<LayoutTensor> tensors;
  append(tensors, spec, "", kHeadTensors);
  const std::uint64_t layer_count = spec.num_hidden_layers + spec.num_nextn_predict_layers;
  for (std::uint64_t layer = 0; layer < layer_count; ++layer) {
    const std::string prefix = fmt::format("model.layers.{}.", layer);
    append(tensors, spec, prefix, kAttentionTensors);
    // MTP layers are MoE layers too (they sit past first_k_dense_replace).
    if (layer < spec.first_k_dense_replace) {
      append(tensors, spec, prefix, kDenseMlpTensors);
    } else {
      append(tensors, spec, prefix, kRouterTensors);
      for (std::uint64_t expert = 0; expert < spec.n_routed_experts; ++expert)
        append(tensors, spec, fmt::format("{}mlp.experts.{}.", prefix, expert), kExpertTensors);
      if (spec.n_shared_experts > 0) append(tensors, spec, prefix, kSharedExpertTensors);
    }
    if (layer >= spec.num_hidden_layers) append(tensors, spec, prefix, kMtpTensors);
  }
  append(tensors, spec, "", kTailTensors);
  return tensors;
}

std::vector<TensorSpec> tensor_specs(const Glm5Dimensions& spec) {
  std::vector<TensorSpec> specs;
  for (auto& tensor : glm5_layout(spec)) specs.push_back(std::move(tensor.spec));
  return specs;
}

std::uint64_t total_tensor_bytes(const Glm5Dimensions& spec) {
  std::uint64_t total = 0;
  for (const auto& tensor : tensor_specs(spec)) total += tensor.byte_size();
  return total;
}

}  // namespace qs
