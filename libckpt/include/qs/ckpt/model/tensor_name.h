#pragma once
// The grammar of the checkpoint tensor names of every model family we know (GLM-5,
// DeepSeek-V3, Qwen3-MoE; docs/models/): which layer and expert a tensor belongs to, what it is
// (its role), which parameter of its module it holds (weight, bias, or a quantization companion
// such as weight_scale), and which tensors vLLM fuses at load time. Parsing never throws: a name
// outside the grammar parses to TensorRole::Unknown, because real checkpoints carry extras we must
// report, not reject.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qs {

// What a module is. Names in comments are the module path after `model.layers.{i}.` unless
// they start with `model.` or `lm_head`.
enum class TensorRole : std::uint8_t {
  Embed,      // model.embed_tokens
  LmHead,     // lm_head
  FinalNorm,  // model.norm

  InputNorm,     // input_layernorm
  PostAttnNorm,  // post_attention_layernorm

  Attention,      // self_attn itself: holds KV-cache scales (k_scale, v_scale, q_scale)
  AttnQA,         // self_attn.q_a_proj
  AttnQANorm,     // self_attn.q_a_layernorm
  AttnQB,         // self_attn.q_b_proj
  AttnKvA,        // self_attn.kv_a_proj_with_mqa
  AttnKvANorm,    // self_attn.kv_a_layernorm
  AttnKvB,        // self_attn.kv_b_proj
  AttnO,          // self_attn.o_proj
  AttnRotaryEmb,  // self_attn.rotary_emb (inv_freq buffers some exports carry; vLLM skips them)

  // Grouped-query attention (qwen3_moe).
  AttnQ,      // self_attn.q_proj
  AttnK,      // self_attn.k_proj
  AttnV,      // self_attn.v_proj
  AttnQNorm,  // self_attn.q_norm (RMSNorm over head_dim)
  AttnKNorm,  // self_attn.k_norm

  IndexerWqB,          // self_attn.indexer.wq_b
  IndexerWk,           // self_attn.indexer.wk
  IndexerKNorm,        // self_attn.indexer.k_norm (LayerNorm: weight and bias)
  IndexerWeightsProj,  // self_attn.indexer.weights_proj

  RouterGate,  // mlp.gate (its weight)
  RouterBias,  // mlp.gate.e_score_correction_bias

  DenseGate,  // mlp.gate_proj (layers below first_k_dense_replace)
  DenseUp,    // mlp.up_proj
  DenseDown,  // mlp.down_proj

  SharedGate,  // mlp.shared_experts.gate_proj
  SharedUp,    // mlp.shared_experts.up_proj
  SharedDown,  // mlp.shared_experts.down_proj

  ExpertGate,  // mlp.experts.{e}.gate_proj
  ExpertUp,    // mlp.experts.{e}.up_proj
  ExpertDown,  // mlp.experts.{e}.down_proj

  // Only in MTP layers (index >= num_hidden_layers). GLM-5 ships no layer-local embed/head;
  // DeepSeek-V3 checkpoints may carry them as copies of the main model's.
  MtpEhProj,            // eh_proj
  MtpEnorm,             // enorm
  MtpHnorm,             // hnorm
  MtpSharedHeadNorm,    // shared_head.norm
  MtpSharedHeadLmHead,  // shared_head.head
  MtpEmbed,             // embed_tokens

  Unknown,  // outside the grammar, or a parameter name we do not know
};

// Coarse groups for recipes and `inspect` totals. Every normalisation (RMSNorm / LayerNorm,
// wherever it sits) is Norm, except the MTP-only ones, which are MtpExtra like the rest of
// the MTP-only tensors.
enum class TensorCategory : std::uint8_t {
  Attention,
  Indexer,
  Router,
  DenseMlp,
  SharedExpert,
  RoutedExpert,
  Norm,
  Embedding,
  LmHead,
  MtpExtra,
  Unknown,
};

// The last component of a tensor name: which tensor of its module this is.
enum class TensorParameter : std::uint8_t {
  Weight,
  Bias,
  EScoreCorrectionBias,  // the router's selection bias (module mlp.gate)
  InvFreq,               // rotary_emb.inv_freq

  // Quantization companions (compressed-tensors, ModelOpt, DeepSeek FP8, GPTQ/AWQ exports).
  WeightPacked,       // CT pack-quantized / nvfp4-pack-quantized codes
  WeightScale,        // CT and ModelOpt per-block / per-channel / per-tensor scale
  WeightScaleInv,     // DeepSeek FP8 block scale (multiplier despite the name)
  WeightScale2,       // ModelOpt NVFP4 per-tensor scale
  WeightGlobalScale,  // CT NVFP4 global scale (a divisor)
  WeightZeroPoint,    // CT asymmetric zero point
  WeightShape,        // CT pack-quantized original [N, K]
  WeightGIdx,         // CT activation-order group index
  InputScale,         // static activation scale
  InputGlobalScale,   // CT NVFP4 W4A4 activation global scale
  InputZeroPoint,     // CT asymmetric activation zero point
  OutputScale,        // older KV-cache scales on k_proj / v_proj
  KScale,             // KV-cache scales on the attention module
  VScale,
  QScale,
  KZeroPoint,
  VZeroPoint,
  QZeroPoint,
  GptqQweight,  // GPTQ / AWQ: qweight, qzeros, scales, g_idx
  GptqQzeros,
  GptqScales,
  GptqGIdx,
  VqCodes,   // vector-quantized codes (docs/formats/vq.md)
  VqScales,  // their per-(row, 128 inputs) scales

  Unknown,
};

// A tensor name taken apart. Invariant: name == module_path + "." + parameter_name whenever
// the name contains a dot (otherwise module_path == name and parameter_name is empty).
struct ParsedTensorName {
  std::string name;            // as given
  std::string module_path;     // name without its last component: model.layers.3.mlp.gate
  std::string parameter_name;  // the last component as written: "weight", "weight_scale"
  TensorParameter parameter = TensorParameter::Unknown;
  TensorRole role = TensorRole::Unknown;
  std::optional<std::uint32_t> layer;   // model.layers.{layer}..., also for unknown roles
  std::optional<std::uint32_t> expert;  // ...mlp.experts.{expert}..., also for unknown roles
};

// Never throws. Layer and expert indices must be canonical decimals (no sign, no leading
// zero, below 10^9) as PyTorch writes them; anything else is not a layer index and the name
// parses to Unknown.
ParsedTensorName parse_tensor_name(std::string_view name);

// Stable short strings for CLI output and JSON, e.g. "attn.q_a", "expert.down", "router.bias";
// "attention", "routed_expert". Each string is distinct.
const char* role_name(TensorRole role);
const char* category_name(TensorCategory category);
// The parameter's canonical spelling ("weight_scale_2"); "unknown" for Unknown.
const char* parameter_name(TensorParameter parameter);

TensorCategory category(TensorRole role);

// Inverses of role_name / category_name (for recipes); nullopt for unknown names and for
// "unknown" itself.
std::optional<TensorRole> parse_role_name(std::string_view text);
std::optional<TensorCategory> parse_category_name(std::string_view text);

// A Linear layer's weight [out, in]: the modules quantizers may target. Includes the router
// gate, lm_head and the MTP projections, which the GLM-5 recipes keep in BF16 but which are
// Linears nonetheless; excludes embeddings and norms.
bool is_linear(TensorRole role);

// weight_scale, weight_packed, k_scale, ...: tensors that exist only because their module is
// quantized. Weight, Bias, EScoreCorrectionBias, InvFreq and Unknown are not.
bool is_quantization_companion(TensorParameter parameter);

// ---- Load-time fusion (docs/models/glm_moe_dsa.md, "vLLM loading") ----

enum class FusionKind : std::uint8_t {
  QkvA,                  // q_a_proj + kv_a_proj_with_mqa -> self_attn.fused_qkv_a_proj
  Qkv,                   // q_proj + k_proj + v_proj -> self_attn.qkv_proj (GQA)
  GateUp,                // gate_proj + up_proj -> gate_up_proj (dense MLP and shared experts)
  ExpertGateUp,          // one routed expert's gate_proj + up_proj -> FusedMoE w13_weight[e]
  IndexerWkWeightsProj,  // indexer.wk + indexer.weights_proj -> indexer.wk_weights_proj
};

// Modules that an engine loads into one matrix. Its shards must share a quantization scheme
// (or all stay unquantized), and NVFP4 shards must share one global scale.
struct FusedGroup {
  FusionKind kind;
  // The fused module's path. For QkvA, Qkv, GateUp and IndexerWkWeightsProj it is vLLM's module
  // name (model.layers.3.self_attn.fused_qkv_a_proj); vLLM has no per-expert module, so
  // for ExpertGateUp it is model.layers.3.mlp.experts.7.gate_up_proj, naming the expert.
  std::string name;
  std::vector<std::string> members;  // checkpoint module paths, in the engine's row order
  std::size_t member_index = 0;      // which member the parsed tensor belongs to
};

// The group the tensor's module belongs to, for any parameter of that module (weight or
// companion); nullopt for modules that stay alone (down_proj, o_proj, ...).
std::optional<FusedGroup> fused_group(const ParsedTensorName& parsed);

// The module path of a role in layer `layer` (and expert `expert`): the inverse of the
// parser, so layouts and the runner spell names from the same table. Unknown has no path
// (throws Internal). Roles outside layers ignore the indices.
std::string role_module_path(TensorRole role, std::uint32_t layer = 0, std::uint32_t expert = 0);

}  // namespace qs
