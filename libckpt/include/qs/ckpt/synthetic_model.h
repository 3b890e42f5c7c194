#pragma once
// GLM-5-shaped BF16 checkpoints with random weights, for tests and benchmarks: the real tensor
// names, shapes, dtypes, tensor order and config.json keys (model-glm5.md §1-§2), at any size.
//
// Every value is a pure function of (seed, tensor name, element index), so any chunk of any
// tensor can be generated on its own, in parallel, and the bytes never depend on the thread
// count, the chunk size or the shard size. Writing streams in bounded chunks: a 20 GB model
// needs about as much memory as a 20 MB one.
//
// The values look like trained weights to a quantizer: Linear weights ~ N(0, 1/sqrt(in)) with a
// sparse heavier tail, per-row scale variation and a few input columns scaled 10-30x (the
// outlier channels that make absmax scaling hard); norm weights ≈ 1; small router biases.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qs/ckpt/safetensors.h"

namespace qs {

// Architecture dimensions, named exactly as the config.json keys they become.
struct SyntheticModelSpec {
  std::uint64_t vocab_size = 0;
  std::uint64_t hidden_size = 0;
  std::uint64_t intermediate_size = 0;      // dense MLP width
  std::uint64_t moe_intermediate_size = 0;  // per routed expert; shared = this × n_shared_experts
  std::uint64_t num_hidden_layers = 0;
  std::uint64_t first_k_dense_replace = 0;     // layers [0, k) are dense, the rest MoE
  std::uint64_t num_nextn_predict_layers = 0;  // MTP layers, at indices num_hidden_layers...
  std::uint64_t num_attention_heads = 0;
  std::uint64_t q_lora_rank = 0;
  std::uint64_t kv_lora_rank = 0;
  std::uint64_t qk_nope_head_dim = 0;
  std::uint64_t qk_rope_head_dim = 0;
  std::uint64_t v_head_dim = 0;
  std::uint64_t index_n_heads = 0;
  std::uint64_t index_head_dim = 0;
  std::uint64_t index_topk = 0;
  std::uint64_t n_routed_experts = 0;
  std::uint64_t n_shared_experts = 0;
  std::uint64_t num_experts_per_tok = 0;
  std::uint64_t n_group = 1;
  std::uint64_t topk_group = 1;
  std::uint64_t max_position_embeddings = 0;
  double routed_scaling_factor = 2.5;
  double rope_theta = 1'000'000.0;
  double rms_norm_eps = 1e-5;
  // Special tokens. Ids an overridden (smaller) vocabulary cannot hold move to its last ids,
  // see special_token_ids().
  std::optional<std::uint64_t> bos_token_id;
  std::vector<std::uint64_t> eos_token_ids;
  std::optional<std::uint64_t> pad_token_id;

  std::uint64_t seed = 0;
  std::uint64_t max_shard_bytes = 5'000'000'000;  // huggingface_hub's "5GB"
};

struct SyntheticPreset {
  std::string_view name;
  std::string_view description;
  SyntheticModelSpec spec;
};

// The named starting points: tiny (the bundled glm5-tiny fixture's dimensions), glm5 (the
// real model, ~1.5 TB), glm5-moe-layer (one real-size MoE layer), bench-4g (~4.7 GB for I/O
// benchmarks).
std::span<const SyntheticPreset> synthetic_presets();
// Throws BadInput "synth.unknown_preset" listing the known names.
const SyntheticPreset& synthetic_preset(std::string_view name);

// Throws BadInput "synth.invalid_spec" for dimensions no GLM-5 model can have (zero sizes,
// more experts per token than experts, more dense layers than layers, an odd RoPE dim, ...).
void validate_synthetic_spec(const SyntheticModelSpec& spec);

// The special token ids as written to the configs: out-of-vocabulary ids map, in increasing
// order, onto the last ids of the vocabulary (keeping equal ids equal).
struct SpecialTokenIds {
  std::optional<std::uint64_t> bos;
  std::vector<std::uint64_t> eos;
  std::optional<std::uint64_t> pad;
};
SpecialTokenIds special_token_ids(const SyntheticModelSpec& spec);

// config.json with the real GLM-5 keys in the real order (GlmMoeDsaForCausalLM, glm_moe_dsa).
nlohmann::ordered_json config_json(const SyntheticModelSpec& spec);
nlohmann::ordered_json generation_config_json(const SyntheticModelSpec& spec);

// Every tensor in checkpoint order: embed_tokens, layers 0.. (MTP layers last), norm, lm_head;
// within a layer the order of the released checkpoints.
std::vector<TensorSpec> tensor_specs(const SyntheticModelSpec& spec);
std::uint64_t total_tensor_bytes(const SyntheticModelSpec& spec);

// The bytes of elements [first_element, first_element + n) of the named tensor of
// tensor_specs(spec), little-endian in its dtype, where n = out.size() / element size. The same
// bytes write_synthetic_checkpoint writes there, however a tensor is split into calls; runs on
// all cores. Throws BadInput "synth.unknown_tensor" for a name the spec does not have.
void generate_synthetic_tensor(const SyntheticModelSpec& spec, std::string_view tensor_name,
                               std::uint64_t first_element, std::span<std::byte> out);

struct SyntheticWriteProgress {
  std::uint64_t tensors_done = 0;
  std::uint64_t tensors_total = 0;
  std::uint64_t bytes_done = 0;  // tensor bytes handed to the writer
  std::uint64_t bytes_total = 0;
};
using SyntheticProgressCallback = std::function<void(const SyntheticWriteProgress&)>;

struct SyntheticWriteSummary {
  std::uint64_t tensors = 0;
  std::uint64_t tensor_bytes = 0;
  std::uint64_t shards = 0;
};

// Writes config.json, generation_config.json and the size-capped shards (+ index, last) into
// `output_directory`, which must not exist or be empty (BadInput "synth.output_not_empty").
// `progress` is called from the calling thread after every chunk.
SyntheticWriteSummary write_synthetic_checkpoint(const SyntheticModelSpec& spec,
                                                 const std::filesystem::path& output_directory,
                                                 const SyntheticProgressCallback& progress = {});

}  // namespace qs
