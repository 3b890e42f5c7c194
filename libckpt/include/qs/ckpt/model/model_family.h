#pragma once
// One description per model family (glm_moe_dsa, deepseek_v3, qwen3_moe): how config.json
// names the family, the one reader of its config.json, which blocks a decoder layer has and
// which layers are MoE. Tensor names come from the name grammar (tensor_name.h) by role, so
// the parser, synth, validate's shape check, the planners and the runner all derive from the
// same facts. docs/models/<family>.md describes each family's layout and config keys.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qs/ckpt/model/tensor_name.h"

namespace qs {

enum class ModelFamilyId : std::uint8_t {
  GlmMoeDsa,   // GLM-5.x: MLA + DSA lightning indexer, sigmoid grouped routing, MTP
  DeepseekV3,  // DeepSeek-V3/V3.1/R1, Kimi-K2: MLA, sigmoid grouped routing (noaux_tc), MTP
  Qwen3Moe,    // Qwen3-30B-A3B / 235B-A22B: GQA with q/k RMSNorm, softmax routing, no MTP
};

enum class AttentionKind : std::uint8_t {
  Mla,  // multi-head latent attention: q_a/q_b, kv_a_proj_with_mqa/kv_b (+ indexer for DSA)
  Gqa,  // grouped-query attention: q/k/v/o with per-head RMSNorm on q and k
};

enum class RouterScoring : std::uint8_t { Sigmoid, Softmax };

// How the router picks experts: noaux_tc ranks groups by their best two biased scores and
// keeps topk_group of them (DeepSeek-V3); greedy takes the top-k over all experts.
enum class TopkMethod : std::uint8_t { NoauxTc, Greedy };

// config.json "rope_scaling" (DeepSeek-V3 and Kimi-K2 use yarn). Absent or null: no scaling.
struct RopeScaling {
  std::string type;  // "yarn", "linear", "dynamic", ...
  double factor = 1.0;
  std::uint64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

// Every family's architecture numbers in one struct, named as the config.json keys they come
// from (qwen3_moe's num_experts is read into n_routed_experts). Keys a family does not have
// keep the defaults below, which describe "absent" (no indexer, one group, no MTP...).
struct ModelDimensions {
  ModelFamilyId family = ModelFamilyId::GlmMoeDsa;

  std::uint64_t vocab_size = 0;
  std::uint64_t hidden_size = 0;
  std::uint64_t intermediate_size = 0;      // dense MLP width
  std::uint64_t moe_intermediate_size = 0;  // per routed expert; shared = this × n_shared_experts
  std::uint64_t num_hidden_layers = 0;
  std::uint64_t first_k_dense_replace = 0;     // MLA families: layers [0, k) are dense
  std::uint64_t moe_layer_freq = 1;            // MLA families: MoE iff layer % freq == 0 too
  std::uint64_t decoder_sparse_step = 1;       // qwen3_moe: MoE iff (layer + 1) % step == 0
  std::vector<std::uint64_t> mlp_only_layers;  // qwen3_moe: dense whatever the step says
  std::uint64_t num_nextn_predict_layers = 0;  // MTP layers, at indices num_hidden_layers...

  std::uint64_t num_attention_heads = 0;
  std::uint64_t num_key_value_heads = 0;  // GQA groups; MLA writes num_attention_heads
  std::uint64_t head_dim = 0;             // GQA: width of each q/k/v head
  // MLA
  std::uint64_t q_lora_rank = 0;
  std::uint64_t kv_lora_rank = 0;
  std::uint64_t qk_nope_head_dim = 0;
  std::uint64_t qk_rope_head_dim = 0;
  std::uint64_t v_head_dim = 0;
  // DSA lightning indexer (glm_moe_dsa only)
  bool has_indexer = true;
  std::uint64_t index_n_heads = 0;
  std::uint64_t index_head_dim = 0;
  std::uint64_t index_topk = 0;

  std::uint64_t n_routed_experts = 0;
  std::uint64_t n_shared_experts = 0;
  std::uint64_t num_experts_per_tok = 0;
  std::uint64_t n_group = 1;
  std::uint64_t topk_group = 1;
  RouterScoring scoring_func = RouterScoring::Sigmoid;
  TopkMethod topk_method = TopkMethod::NoauxTc;  // noaux_tc routers store e_score_correction_bias
  bool norm_topk_prob = true;
  double routed_scaling_factor = 2.5;

  std::uint64_t max_position_embeddings = 0;
  double rope_theta = 1'000'000.0;
  bool rope_interleave = true;  // MLA: rotate adjacent pairs; qwen3_moe: rotate halves
  std::optional<RopeScaling> rope_scaling;
  double rms_norm_eps = 1e-5;
  bool tie_word_embeddings = false;

  // Special tokens. Ids an overridden (smaller) vocabulary cannot hold move to its last ids,
  // see special_token_ids().
  std::optional<std::uint64_t> bos_token_id;
  std::vector<std::uint64_t> eos_token_ids;
  std::optional<std::uint64_t> pad_token_id;

  // Decoder layers plus MTP layers: the model.layers.{i} indices a checkpoint holds.
  std::uint64_t layer_count() const { return num_hidden_layers + num_nextn_predict_layers; }
  bool is_mtp_layer(std::uint64_t layer) const { return layer >= num_hidden_layers; }
  // Whether layer `layer` (decoder or MTP) has routed experts, by the family's rule.
  bool is_moe_layer(std::uint64_t layer) const;
};

// The name GLM-5 code used before the families existed; the same struct.
using Glm5Dimensions = ModelDimensions;

// Which layers are MoE, as each family's engines decide it.
enum class MoeLayerRule : std::uint8_t {
  FirstKDenseThenFreq,  // DeepSeek: i >= first_k_dense_replace && i % moe_layer_freq == 0
  SparseStep,           // Qwen3-MoE: i not in mlp_only_layers && (i + 1) % decoder_sparse_step == 0
};

struct ModelFamily {
  ModelFamilyId id;
  std::string_view name;  // the model_type synth writes, and the docs/models/ page name
  std::span<const std::string_view> model_types;    // config.json model_type values
  std::span<const std::string_view> architectures;  // config.json architectures entries
  AttentionKind attention;
  MoeLayerRule moe_layers;
  bool has_indexer;
  bool has_shared_experts;
  bool has_mtp;
  // Whether an MTP layer stores its own embed_tokens and shared_head.head (DeepSeek-V3 does,
  // as copies of the main model's; GLM-5 shares them and stores none).
  bool mtp_stores_embed_and_head;
  // The engine-fused groups this family's vLLM model loads (tensor_name.h's fused_group).
  std::span<const FusionKind> fusions;
};

std::span<const ModelFamily> model_families();
const ModelFamily& model_family(ModelFamilyId id);
// By name ("deepseek_v3"); nullptr when no family has it.
const ModelFamily* model_family_named(std::string_view name);
// The family config.json describes: model_type first, then architectures. nullptr when it
// names none we know (or is not an object).
const ModelFamily* find_model_family(const nlohmann::json& config);
// Same, but throws BadInput "config.unknown_family" naming `file` and what the config says.
const ModelFamily& model_family_of(const nlohmann::json& config, const std::string& file);

// The family's fixed choices (routing, RoPE style, indexer) with every size zero: where the
// config reader and synth's presets start.
ModelDimensions default_dimensions(ModelFamilyId id);

// The one config.json reader: the family's keys into ModelDimensions, checked with
// validate_dimensions. Throws BadInput config.unknown_family, config.missing_key,
// config.invalid_value (naming `file` and the key) and layout.invalid_dimensions.
ModelDimensions dimensions_from_config(const nlohmann::json& config, const std::string& file);

// ---- Layer structure, read tolerantly (inspect, recipes' layer selectors) ----

// The config.json numbers that give a layer index its meaning.
struct ModelLayout {
  std::uint32_t num_hidden_layers = 0;      // layers at or above this index are MTP layers
  std::uint32_t first_k_dense_replace = 0;  // FirstKDenseThenFreq: layers below are dense
  std::uint32_t moe_layer_freq = 1;
  std::uint32_t num_nextn_predict_layers = 0;
  MoeLayerRule moe_rule = MoeLayerRule::FirstKDenseThenFreq;
  std::uint32_t decoder_sparse_step = 1;
  std::vector<std::uint32_t> mlp_only_layers;

  bool is_mtp_layer(std::uint32_t layer) const { return layer >= num_hidden_layers; }
  // vLLM's rule for the family (DeepseekV2DecoderLayer / Qwen3MoeDecoderLayer). MTP layers
  // are always past first_k_dense_replace.
  bool is_moe_layer(std::uint32_t layer) const;
};

// The layer keys of config.json, read with the family's rule (unknown families: the DeepSeek
// keys, as every MLA model spells them). Absent optional keys default as in transformers.
// nullopt, never a throw, when num_hidden_layers is absent or any key present is not an
// integer in [0, 2^32), or moe_layer_freq / decoder_sparse_step is 0: the caller decides how
// bad that is.
std::optional<ModelLayout> model_layout_from_config(const nlohmann::json& config);

// Whether the tensor lives in an MTP layer: its layer index is >= num_hidden_layers. The
// MTP-only tensors (eh_proj, enorm, ...) are recognisable without a layout (category
// MtpExtra); the decoder block of the MTP layer (model.layers.78.self_attn.q_a_proj for
// GLM-5) is not.
bool in_mtp_layer(const ParsedTensorName& parsed, const ModelLayout& layout);

// The layer structure of full dimensions (what ModelDimensions::is_moe_layer asks).
ModelLayout layout_of(const ModelDimensions& dimensions);

// Throws BadInput "layout.invalid_dimensions" naming the rule for dimensions no model of the
// family can have (zero sizes, more experts per token than experts, an odd RoPE dim, heads not
// a multiple of the KV heads, n_group not dividing the experts, ...). `file` (the config.json
// they were read from, if any) is named in the error.
void validate_dimensions(const ModelDimensions& dimensions, const std::string& file = {});

}  // namespace qs
