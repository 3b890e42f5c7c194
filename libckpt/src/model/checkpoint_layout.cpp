// A checkpoint's tensors as a function of its family and dimensions: every tensor's name,
// shape and dtype in the order of the released checkpoints, and the config.json that
// describes them (docs/models/). synth generates it; validate checks real checkpoints
// against it.

#include "qs/ckpt/model/checkpoint_layout.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <span>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

using Spec = ModelDimensions;

// ---------------------------------------------------------------------------------------------
// Validation: one row per requirement, so an error names the rule that failed. Rows that do
// not concern a family (the indexer's for qwen3_moe) hold trivially.

bool is_mla(const Spec& s) { return model_family(s.family).attention == AttentionKind::Mla; }
bool is_gqa(const Spec& s) { return model_family(s.family).attention == AttentionKind::Gqa; }

// Whether any decoder or MTP layer is dense / MoE by the family's rule (capped so that absurd
// layer counts, refused by their own rows, cost nothing).
bool any_layer(const Spec& s, bool moe) {
  const ModelLayout layout = layout_of(s);
  const std::uint64_t layers = std::min<std::uint64_t>(s.layer_count(), 1u << 16);
  for (std::uint64_t layer = 0; layer < layers; ++layer)
    if (layout.is_moe_layer(static_cast<std::uint32_t>(layer)) == moe) return true;
  return false;
}
bool has_dense_layers(const Spec& s) { return any_layer(s, false); }
bool has_moe_layers(const Spec& s) { return any_layer(s, true); }

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
    {[](const Spec& s) { return s.moe_layer_freq > 0 && s.decoder_sparse_step > 0; },
     "moe_layer_freq > 0 and decoder_sparse_step > 0"},
    {[](const Spec& s) {
       return std::all_of(s.mlp_only_layers.begin(), s.mlp_only_layers.end(),
                          [&](std::uint64_t layer) { return layer < s.num_hidden_layers; });
     },
     "every mlp_only_layers entry < num_hidden_layers"},
    {[](const Spec& s) { return s.num_attention_heads > 0; }, "num_attention_heads > 0"},
    {[](const Spec& s) { return !is_mla(s) || (s.q_lora_rank > 0 && s.kv_lora_rank > 0); },
     "q_lora_rank > 0 and kv_lora_rank > 0"},
    {[](const Spec& s) { return !is_mla(s) || (s.qk_nope_head_dim > 0 && s.v_head_dim > 0); },
     "qk_nope_head_dim > 0 and v_head_dim > 0"},
    {[](const Spec& s) {
       return !is_mla(s) || (s.qk_rope_head_dim > 0 && s.qk_rope_head_dim % 2 == 0);
     },
     "qk_rope_head_dim even and > 0 (RoPE rotates pairs)"},
    {[](const Spec& s) {
       return !is_gqa(s) ||
              (s.num_key_value_heads > 0 && s.num_attention_heads % s.num_key_value_heads == 0);
     },
     "num_key_value_heads > 0 dividing num_attention_heads (each KV head serves a whole group)"},
    {[](const Spec& s) { return !is_gqa(s) || (s.head_dim > 0 && s.head_dim % 2 == 0); },
     "head_dim even and > 0 (RoPE rotates pairs)"},
    {[](const Spec& s) { return !s.has_indexer || s.index_n_heads > 0; }, "index_n_heads > 0"},
    {[](const Spec& s) { return !s.has_indexer || s.index_head_dim > s.qk_rope_head_dim; },
     "index_head_dim > qk_rope_head_dim (the indexer splits [rope | nope])"},
    {[](const Spec& s) { return !s.has_indexer || s.index_topk > 0; }, "index_topk > 0"},
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
    {[](const Spec& s) {
       return !has_moe_layers(s) || s.n_group == 0 ||
              s.num_experts_per_tok <= s.topk_group * (s.n_routed_experts / s.n_group);
     },
     "num_experts_per_tok <= topk_group x experts per group (the groups kept must hold top-k)"},
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
// Tensor layout. Each tensor comes from a template row: its role (which gives its module path
// through the name grammar), parameter, dtype, the kind of values it holds and its shape as a
// function of the spec.

using ShapeOf = Shape (*)(const Spec&);

struct TensorTemplate {
  TensorRole role;
  TensorParameter parameter;
  DType dtype;
  TensorKind kind;
  ShapeOf shape;
};

using enum TensorKind;
using Role = TensorRole;
constexpr auto W = TensorParameter::Weight;

// One row per tensor: kept compact by hand, clang-format would spread each over four lines.
// clang-format off
constexpr TensorTemplate kHeadTensors[] = {
    {Role::Embed, W, DType::BF16, Embedding,
     [](const Spec& s) { return Shape{s.vocab_size, s.hidden_size}; }},
};

constexpr TensorTemplate kInputNorm[] = {
    {Role::InputNorm, W, DType::BF16, NormWeight, [](const Spec& s) { return Shape{s.hidden_size}; }},
};

// MLA (glm_moe_dsa, deepseek_v3), in the order of the released checkpoints.
constexpr TensorTemplate kMlaTensors[] = {
    {Role::AttnQA, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.q_lora_rank, s.hidden_size}; }},
    {Role::AttnQANorm, W, DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.q_lora_rank}; }},
    {Role::AttnQB, W, DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.num_attention_heads * (s.qk_nope_head_dim + s.qk_rope_head_dim),
                    s.q_lora_rank};
     }},
    {Role::AttnKvA, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.kv_lora_rank + s.qk_rope_head_dim, s.hidden_size}; }},
    {Role::AttnKvANorm, W, DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.kv_lora_rank}; }},
    {Role::AttnKvB, W, DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.num_attention_heads * (s.qk_nope_head_dim + s.v_head_dim), s.kv_lora_rank};
     }},
    {Role::AttnO, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, s.num_attention_heads * s.v_head_dim}; }},
};

// The DSA lightning indexer (glm_moe_dsa), after o_proj as GLM-5 stores it.
constexpr TensorTemplate kIndexerTensors[] = {
    {Role::IndexerWqB, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.index_n_heads * s.index_head_dim, s.q_lora_rank}; }},
    {Role::IndexerWk, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.index_head_dim, s.hidden_size}; }},
    {Role::IndexerKNorm, W, DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.index_head_dim}; }},
    {Role::IndexerKNorm, TensorParameter::Bias, DType::BF16, NormBias,
     [](const Spec& s) { return Shape{s.index_head_dim}; }},
    {Role::IndexerWeightsProj, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.index_n_heads, s.hidden_size}; }},
};

// GQA with per-head q/k RMSNorm (qwen3_moe).
constexpr TensorTemplate kGqaTensors[] = {
    {Role::AttnQ, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.num_attention_heads * s.head_dim, s.hidden_size}; }},
    {Role::AttnK, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.num_key_value_heads * s.head_dim, s.hidden_size}; }},
    {Role::AttnV, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.num_key_value_heads * s.head_dim, s.hidden_size}; }},
    {Role::AttnO, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, s.num_attention_heads * s.head_dim}; }},
    {Role::AttnQNorm, W, DType::BF16, NormWeight, [](const Spec& s) { return Shape{s.head_dim}; }},
    {Role::AttnKNorm, W, DType::BF16, NormWeight, [](const Spec& s) { return Shape{s.head_dim}; }},
};

constexpr TensorTemplate kPostAttentionNorm[] = {
    {Role::PostAttnNorm, W, DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.hidden_size}; }},
};

constexpr TensorTemplate kDenseMlpTensors[] = {
    {Role::DenseGate, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.intermediate_size, s.hidden_size}; }},
    {Role::DenseUp, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.intermediate_size, s.hidden_size}; }},
    {Role::DenseDown, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, s.intermediate_size}; }},
};

constexpr TensorTemplate kRouterGate[] = {
    {Role::RouterGate, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.n_routed_experts, s.hidden_size}; }},
};
// noaux_tc routers only. F32 in the official BF16 releases: HF keeps it in fp32 strictly.
constexpr TensorTemplate kRouterBias[] = {
    {Role::RouterBias, TensorParameter::EScoreCorrectionBias, DType::F32, RouterBias,
     [](const Spec& s) { return Shape{s.n_routed_experts}; }},
};

constexpr TensorTemplate kExpertTensors[] = {
    {Role::ExpertGate, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.moe_intermediate_size, s.hidden_size}; }},
    {Role::ExpertUp, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.moe_intermediate_size, s.hidden_size}; }},
    {Role::ExpertDown, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, s.moe_intermediate_size}; }},
};

constexpr TensorTemplate kSharedExpertTensors[] = {
    {Role::SharedGate, W, DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.moe_intermediate_size * s.n_shared_experts, s.hidden_size};
     }},
    {Role::SharedUp, W, DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.moe_intermediate_size * s.n_shared_experts, s.hidden_size};
     }},
    {Role::SharedDown, W, DType::BF16, Linear,
     [](const Spec& s) {
       return Shape{s.hidden_size, s.moe_intermediate_size * s.n_shared_experts};
     }},
};

// What an MTP layer has beyond a decoder layer, in the order GLM-5 stores it.
constexpr TensorTemplate kMtpTensors[] = {
    {Role::MtpEnorm, W, DType::BF16, NormWeight, [](const Spec& s) { return Shape{s.hidden_size}; }},
    {Role::MtpHnorm, W, DType::BF16, NormWeight, [](const Spec& s) { return Shape{s.hidden_size}; }},
    {Role::MtpEhProj, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.hidden_size, 2 * s.hidden_size}; }},
    {Role::MtpSharedHeadNorm, W, DType::BF16, NormWeight,
     [](const Spec& s) { return Shape{s.hidden_size}; }},
};
// DeepSeek-V3 also stores the MTP layer's own embedding and head (copies of the main ones).
constexpr TensorTemplate kMtpEmbedAndHead[] = {
    {Role::MtpEmbed, W, DType::BF16, Embedding,
     [](const Spec& s) { return Shape{s.vocab_size, s.hidden_size}; }},
    {Role::MtpSharedHeadLmHead, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.vocab_size, s.hidden_size}; }},
};

constexpr TensorTemplate kFinalNorm[] = {
    {Role::FinalNorm, W, DType::BF16, NormWeight, [](const Spec& s) { return Shape{s.hidden_size}; }},
};
constexpr TensorTemplate kLmHead[] = {
    {Role::LmHead, W, DType::BF16, Linear,
     [](const Spec& s) { return Shape{s.vocab_size, s.hidden_size}; }},
};
// clang-format on

// The blocks of one layer, in checkpoint order, as the family and the layer decide them. The
// count and the layout both walk this, so they cannot disagree.
struct LayerBlocks {
  std::vector<std::span<const TensorTemplate>> once;  // the layer's own tensors
  std::span<const TensorTemplate> per_expert;         // repeated for every routed expert, after
  std::vector<std::span<const TensorTemplate>> after_experts;
};

LayerBlocks layer_blocks(const Spec& s, std::uint64_t layer) {
  const ModelFamily& family = model_family(s.family);
  LayerBlocks blocks;
  blocks.once.push_back(kInputNorm);
  if (family.attention == AttentionKind::Mla) {
    blocks.once.push_back(kMlaTensors);
  } else {
    blocks.once.push_back(kGqaTensors);
  }
  if (s.has_indexer) blocks.once.push_back(kIndexerTensors);
  blocks.once.push_back(kPostAttentionNorm);
  if (!layout_of(s).is_moe_layer(static_cast<std::uint32_t>(layer))) {
    blocks.once.push_back(kDenseMlpTensors);
  } else {
    blocks.once.push_back(kRouterGate);
    if (s.topk_method == TopkMethod::NoauxTc) blocks.once.push_back(kRouterBias);
    blocks.per_expert = kExpertTensors;
    if (s.n_shared_experts > 0) blocks.after_experts.push_back(kSharedExpertTensors);
  }
  if (s.is_mtp_layer(layer)) {
    if (family.mtp_stores_embed_and_head) blocks.after_experts.push_back(kMtpEmbedAndHead);
    blocks.after_experts.push_back(kMtpTensors);
  }
  return blocks;
}

std::vector<std::span<const TensorTemplate>> tail_blocks(const Spec& s) {
  if (s.tie_word_embeddings) return {kFinalNorm};
  return {kFinalNorm, kLmHead};
}

// checkpoint_layout's tensor count without building it; saturates at UINT64_MAX, so it is safe
// on any dimensions, even ones validate_dimensions has not accepted yet.
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
  auto size_of = [](const auto& spans) {
    std::uint64_t count = 0;
    for (const auto& span : spans) count += span.size();
    return count;
  };
  // Walks at most 2^16 layers (more saturates): config_numbers bounds real configs far below.
  const std::uint64_t layers = add(s.num_hidden_layers, s.num_nextn_predict_layers);
  const std::uint64_t walked = std::min<std::uint64_t>(layers, 1u << 16);
  std::uint64_t count = add(std::size(kHeadTensors), size_of(tail_blocks(s)));
  for (std::uint64_t layer = 0; layer < walked; ++layer) {
    const LayerBlocks blocks = layer_blocks(s, layer);
    count = add(count, size_of(blocks.once));
    count = add(count, size_of(blocks.after_experts));
    if (!blocks.per_expert.empty())
      count = add(count, multiply(s.n_routed_experts, blocks.per_expert.size()));
  }
  return layers > walked ? kSaturated : count;
}

void append(std::vector<LayoutTensor>& out, const Spec& spec, std::uint64_t layer,
            std::uint64_t expert, std::span<const TensorTemplate> templates) {
  for (const auto& row : templates)
    out.push_back({{fmt::format("{}.{}",
                                role_module_path(row.role, static_cast<std::uint32_t>(layer),
                                                 static_cast<std::uint32_t>(expert)),
                                parameter_name(row.parameter)),
                    row.dtype, row.shape(spec)},
                   row.kind,
                   row.role});
}

nlohmann::ordered_json json_number(double value) {
  // 1000000 rather than 1000000.0, as Python's json writes an int-valued config entry.
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 9.0e15)
    return static_cast<std::int64_t>(value);
  return value;
}

nlohmann::ordered_json glm_moe_dsa_config(const ModelDimensions& spec) {
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
  config["moe_layer_freq"] = spec.moe_layer_freq;
  config["num_nextn_predict_layers"] = spec.num_nextn_predict_layers;
  config["num_attention_heads"] = spec.num_attention_heads;
  config["num_key_value_heads"] = spec.num_attention_heads;  // MLA expands to MHA
  config["q_lora_rank"] = spec.q_lora_rank;
  config["kv_lora_rank"] = spec.kv_lora_rank;
  config["qk_nope_head_dim"] = spec.qk_nope_head_dim;
  config["qk_rope_head_dim"] = spec.qk_rope_head_dim;
  config["qk_head_dim"] = spec.qk_nope_head_dim + spec.qk_rope_head_dim;
  // Equal to qk_rope_head_dim, as in GLM-5: some transformers builds alias head_dim onto the
  // rope dim and would silently change it otherwise (docs/models/glm_moe_dsa.md).
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

// The eos id as the family's configs write it: DeepSeek and Qwen a number when there is one.
nlohmann::json eos_value(const SpecialTokenIds& tokens) {
  if (tokens.eos.size() == 1) return tokens.eos.front();
  return tokens.eos;
}

nlohmann::json rope_scaling_json(const ModelDimensions& spec) {
  if (!spec.rope_scaling) return nullptr;
  const RopeScaling& r = *spec.rope_scaling;
  return {{"type", r.type},
          {"factor", json_number(r.factor)},
          {"original_max_position_embeddings", r.original_max_position_embeddings},
          {"beta_fast", json_number(r.beta_fast)},
          {"beta_slow", json_number(r.beta_slow)},
          {"mscale", json_number(r.mscale)},
          {"mscale_all_dim", json_number(r.mscale_all_dim)}};
}

const char* scoring_name(RouterScoring scoring) {
  return scoring == RouterScoring::Sigmoid ? "sigmoid" : "softmax";
}

// deepseek-ai/DeepSeek-V3's config.json keys; the released file lists them sorted, as a
// nlohmann::json object keeps them.
nlohmann::ordered_json deepseek_v3_config(const ModelDimensions& spec) {
  const SpecialTokenIds tokens = special_token_ids(spec);
  nlohmann::json config;
  config["architectures"] = {"DeepseekV3ForCausalLM"};
  config["model_type"] = "deepseek_v3";
  config["attention_bias"] = false;
  config["attention_dropout"] = 0.0;
  if (tokens.bos) config["bos_token_id"] = *tokens.bos;
  config["eos_token_id"] = eos_value(tokens);
  if (tokens.pad) config["pad_token_id"] = *tokens.pad;
  config["ep_size"] = 1;
  config["first_k_dense_replace"] = spec.first_k_dense_replace;
  config["hidden_act"] = "silu";
  config["hidden_size"] = spec.hidden_size;
  config["initializer_range"] = 0.02;
  config["intermediate_size"] = spec.intermediate_size;
  config["kv_lora_rank"] = spec.kv_lora_rank;
  config["max_position_embeddings"] = spec.max_position_embeddings;
  config["moe_intermediate_size"] = spec.moe_intermediate_size;
  config["moe_layer_freq"] = spec.moe_layer_freq;
  config["n_group"] = spec.n_group;
  config["n_routed_experts"] = spec.n_routed_experts;
  config["n_shared_experts"] = spec.n_shared_experts;
  config["norm_topk_prob"] = spec.norm_topk_prob;
  config["num_attention_heads"] = spec.num_attention_heads;
  config["num_experts_per_tok"] = spec.num_experts_per_tok;
  config["num_hidden_layers"] = spec.num_hidden_layers;
  config["num_key_value_heads"] = spec.num_attention_heads;  // MLA expands to MHA
  config["num_nextn_predict_layers"] = spec.num_nextn_predict_layers;
  config["q_lora_rank"] = spec.q_lora_rank;
  config["qk_nope_head_dim"] = spec.qk_nope_head_dim;
  config["qk_rope_head_dim"] = spec.qk_rope_head_dim;
  config["rms_norm_eps"] = spec.rms_norm_eps;
  config["rope_scaling"] = rope_scaling_json(spec);
  config["rope_theta"] = json_number(spec.rope_theta);
  config["routed_scaling_factor"] = json_number(spec.routed_scaling_factor);
  config["scoring_func"] = scoring_name(spec.scoring_func);
  config["tie_word_embeddings"] = spec.tie_word_embeddings;
  config["topk_group"] = spec.topk_group;
  config["topk_method"] = spec.topk_method == TopkMethod::NoauxTc ? "noaux_tc" : "greedy";
  config["torch_dtype"] = "bfloat16";
  config["transformers_version"] = "4.46.3";
  config["use_cache"] = true;
  config["v_head_dim"] = spec.v_head_dim;
  config["vocab_size"] = spec.vocab_size;
  return config;
}

// Qwen/Qwen3-30B-A3B's config.json keys, sorted as released.
nlohmann::ordered_json qwen3_moe_config(const ModelDimensions& spec) {
  const SpecialTokenIds tokens = special_token_ids(spec);
  nlohmann::json config;
  config["architectures"] = {"Qwen3MoeForCausalLM"};
  config["model_type"] = "qwen3_moe";
  config["attention_bias"] = false;
  config["attention_dropout"] = 0.0;
  if (tokens.bos) config["bos_token_id"] = *tokens.bos;
  config["eos_token_id"] = eos_value(tokens);
  if (tokens.pad) config["pad_token_id"] = *tokens.pad;
  config["decoder_sparse_step"] = spec.decoder_sparse_step;
  config["head_dim"] = spec.head_dim;
  config["hidden_act"] = "silu";
  config["hidden_size"] = spec.hidden_size;
  config["initializer_range"] = 0.02;
  config["intermediate_size"] = spec.intermediate_size;
  config["max_position_embeddings"] = spec.max_position_embeddings;
  config["max_window_layers"] = spec.num_hidden_layers;
  config["mlp_only_layers"] = spec.mlp_only_layers;
  config["moe_intermediate_size"] = spec.moe_intermediate_size;
  config["norm_topk_prob"] = spec.norm_topk_prob;
  config["num_attention_heads"] = spec.num_attention_heads;
  config["num_experts"] = spec.n_routed_experts;
  config["num_experts_per_tok"] = spec.num_experts_per_tok;
  config["num_hidden_layers"] = spec.num_hidden_layers;
  config["num_key_value_heads"] = spec.num_key_value_heads;
  config["output_router_logits"] = false;
  config["rms_norm_eps"] = spec.rms_norm_eps;
  config["rope_scaling"] = rope_scaling_json(spec);
  config["rope_theta"] = json_number(spec.rope_theta);
  config["router_aux_loss_coef"] = 0.001;
  config["sliding_window"] = nullptr;
  config["tie_word_embeddings"] = spec.tie_word_embeddings;
  config["torch_dtype"] = "bfloat16";
  config["transformers_version"] = "4.51.0";
  config["use_cache"] = true;
  config["use_sliding_window"] = false;
  config["vocab_size"] = spec.vocab_size;
  return config;
}

using ConfigWriter = nlohmann::ordered_json (*)(const ModelDimensions&);
constexpr ConfigWriter kConfigWriters[] = {glm_moe_dsa_config, deepseek_v3_config,
                                           qwen3_moe_config};

}  // namespace

void validate_dimensions(const ModelDimensions& spec, const std::string& file) {
  for (const auto& requirement : kSpecRequirements)
    if (!requirement.holds(spec))
      throw_bad_input("layout.invalid_dimensions",
                      fmt::format("impossible model dimensions: need {}", requirement.text), file);
}

SpecialTokenIds special_token_ids(const ModelDimensions& spec) {
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

nlohmann::ordered_json generation_config_json(const ModelDimensions& spec) {
  const SpecialTokenIds tokens = special_token_ids(spec);
  nlohmann::ordered_json config;
  config["_from_model_config"] = true;
  if (tokens.bos) config["bos_token_id"] = *tokens.bos;
  config["eos_token_id"] = tokens.eos;
  if (tokens.pad) config["pad_token_id"] = *tokens.pad;
  config["transformers_version"] = "5.0.2.dev0";
  return config;
}

std::vector<LayoutTensor> checkpoint_layout(const ModelDimensions& spec) {
  validate_dimensions(spec);
  std::vector<LayoutTensor> tensors;
  append(tensors, spec, 0, 0, kHeadTensors);
  for (std::uint64_t layer = 0; layer < spec.layer_count(); ++layer) {
    const LayerBlocks blocks = layer_blocks(spec, layer);
    for (const auto& block : blocks.once) append(tensors, spec, layer, 0, block);
    if (!blocks.per_expert.empty())
      for (std::uint64_t expert = 0; expert < spec.n_routed_experts; ++expert)
        append(tensors, spec, layer, expert, blocks.per_expert);
    for (const auto& block : blocks.after_experts) append(tensors, spec, layer, 0, block);
  }
  for (const auto& block : tail_blocks(spec)) append(tensors, spec, 0, 0, block);
  return tensors;
}

std::vector<TensorSpec> tensor_specs(const ModelDimensions& spec) {
  std::vector<TensorSpec> specs;
  for (auto& tensor : checkpoint_layout(spec)) specs.push_back(std::move(tensor.spec));
  return specs;
}

std::uint64_t total_tensor_bytes(const ModelDimensions& spec) {
  std::uint64_t total = 0;
  for (const auto& tensor : tensor_specs(spec)) total += tensor.byte_size();
  return total;
}

nlohmann::ordered_json config_json(const ModelDimensions& spec) {
  validate_dimensions(spec);
  return kConfigWriters[static_cast<std::size_t>(spec.family)](spec);
}

}  // namespace qs
