#pragma once
// The GLM-5 (glm_moe_dsa) checkpoint layout as a function of its dimensions: every tensor's
// name, shape and dtype in the order of the released checkpoints (docs/models/glm_moe_dsa.md,
// "Tensor names and shapes"), and the config.json that describes it. `synth` generates this layout;
// `validate` checks real checkpoints against it.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/io/safetensors.h"

namespace qs {

// Architecture dimensions, named exactly as the config.json keys they come from.
struct Glm5Dimensions {
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
};

// What a tensor holds, which decides how synth fills it and what quantizers may target.
enum class TensorKind {
  Linear,      // nn.Linear weight [out, in]
  Embedding,   // token embedding rows
  NormWeight,  // RMSNorm / LayerNorm gain
  NormBias,    // LayerNorm shift
  RouterBias,  // e_score_correction_bias, F32
};

struct LayoutTensor {
  TensorSpec spec;
  TensorKind kind;
};

// Throws BadInput "layout.invalid_dimensions" naming the rule for dimensions no GLM-5 model can
// have (zero sizes, more experts per token than experts, an odd RoPE dim, ...).
void validate_dimensions(const Glm5Dimensions& dimensions);

// Reads the dimensions from a config.json (model_type glm_moe_dsa). Missing or non-integer
// keys throw BadInput ("config.missing_key", "config.invalid_value") naming `file`.
Glm5Dimensions dimensions_from_config(const nlohmann::json& config, const std::string& file);

// Every tensor in checkpoint order: embed_tokens, layers 0.. (MTP layers last), norm, lm_head;
// within a layer the order of the released checkpoints.
std::vector<LayoutTensor> glm5_layout(const Glm5Dimensions& dimensions);
std::vector<TensorSpec> tensor_specs(const Glm5Dimensions& dimensions);
std::uint64_t total_tensor_bytes(const Glm5Dimensions& dimensions);

// The special token ids as written to the configs: out-of-vocabulary ids map, in increasing
// order, onto the last ids of the vocabulary (keeping equal ids equal).
struct SpecialTokenIds {
  std::optional<std::uint64_t> bos;
  std::vector<std::uint64_t> eos;
  std::optional<std::uint64_t> pad;
};
SpecialTokenIds special_token_ids(const Glm5Dimensions& dimensions);

// config.json with the real GLM-5 keys in the real order (GlmMoeDsaForCausalLM, glm_moe_dsa).
nlohmann::ordered_json config_json(const Glm5Dimensions& dimensions);
nlohmann::ordered_json generation_config_json(const Glm5Dimensions& dimensions);

}  // namespace qs
