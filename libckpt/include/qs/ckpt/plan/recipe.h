#pragma once
// Recipes: the per-tensor precision policy of a job, as YAML (recipes/*.yaml) or built from
// command-line flags. Rules are tried in order and the first that matches a tensor decides it
// (llama.cpp's table-driven type policy). A tensor no rule matches is copied unchanged.
//
//   description: GLM-5 routed experts in NVFP4, everything else BF16
//   format: modelopt                 # or compressed-tensors
//   parameters: {boundary_layers: 2} # defaults; `--param boundary_layers=1` overrides
//   rules:
//     - name: first and last layers stay BF16
//       layers: "first {boundary_layers}, last {boundary_layers}"
//       action: keep
//     - name: routed experts
//       category: routed_expert
//       action: nvfp4
//       scale_method: mse
//
// Match keys (all given keys must match): `category` (category names of tensor_name.h:
// attention, indexer, router, dense_mlp, shared_expert, routed_expert, norm, embedding,
// lm_head, mtp_extra), `role` (role names: attn.q_a, expert.gate, indexer.weights_proj, ...),
// `module` (name patterns over the module path, name_pattern.h Glob dialect or "re:"),
// `layers` (a layer selector, below), `mtp` (true: only tensors of MTP layers; false: none).
// Each of category/role/module takes one string or a list (any may match).
//
// Layer selectors: comma-separated terms over layer indices: "7", "3-77", "first 2",
// "last 2" (of the main layers, 0 .. num_hidden_layers-1), "mtp" (every MTP layer), "all".
// "{name}" is replaced by a parameter's value first. Tensors outside any layer (embeddings,
// lm_head, the final norm) never match a rule that has `layers`.
//
// Actions: keep (bytes unchanged), bf16 / f16 / f32 (float cast), and quantization schemes:
// nvfp4, and nvfp4-gptq (GPTQ on the NVFP4 grid, same output; needs calibration statistics);
// int (round-to-nearest integers) and gptq (integers through GPTQ, which needs calibration
// statistics), written as compressed-tensors pack-quantized; fp8-block (F8_E4M3 with one F32
// scale per 128 × 128 block, DeepSeek-V3's layout, docs/formats/fp8-block.md).
// Integer presets:
//   int8          8-bit symmetric, group 128 (W8A16)     gptq-int8   the same through GPTQ
//   int8-channel  8-bit symmetric, one scale per row
//   int4          4-bit asymmetric, group 128 (W4A16)    gptq-int4   the same through GPTQ
//   int4-g32      4-bit asymmetric, group 32
// A quantizing rule only matches Linear weights (2-D `.weight` of a Linear module); other
// tensors fall through to later rules. Per-rule options: scale_method (nvfp4, nvfp4-gptq:
// max, mse, fp8-sweep, joint, hessian — hessian needs calibration statistics; under nvfp4-gptq
// it picks each block's scale when the sweep enters the block); bits, symmetric, group_size (a
// number or "channel"), observer (minmax, mse) for integers; and for gptq and nvfp4-gptq damp
// (fraction of the mean Hessian diagonal, 0.01; also the hessian method's), act_order (true:
// columns in order of decreasing Hessian diagonal, groups stay on the original columns;
// nvfp4-gptq moves whole 16-column blocks), min_tokens (modules calibrated on fewer token rows
// fall back to the uncalibrated quantizer), blend_tokens (also for nvfp4's hessian method:
// routed experts' gate/up with fewer tokens borrow the layer's pooled statistics), report_rtn
// (true: also score round-to-nearest as the report's baseline; false skips that product).
//
// Vector quantization (docs/formats/vq.md): action `vq` writes each matched Linear as codes
// into a codebook shared per tier, one scale per (row, 128 inputs):
//   vq_tiers:                       # recipe level, optional: custom tiers beside the presets
//     vq2wide: {d: 8, k: 65536}     #   (codebook: learned, the default, or uniform with d 1)
//   rules:
//     - category: routed_expert
//       action: vq
//       tiers: [vq1, vq2, vq3]      # presets vq1 vq1.5 vq2 vq3 int1 int2 int3, or vq_tiers
//       target_bpw: 1.9             # needed with several tiers: the average bits per weight
//                                   # (scales included) the allocator reaches over the modules
//                                   # of allocating rules; ignored with one tier
//       codebooks: model            # one codebook per tier for the model, or per layer
//       compensation: gptq          # GPTQ error feedback, or none (nearest codeword)
//       metric: mahalanobis         # or euclidean: how the codeword is chosen
//       update: exact               # or diagonal (GPTVQ's): how the error is fed forward
//       refine: 0                   # codebook refinement rounds
//       refit_scales: false         # least-squares group scales with codes fixed
//       gain_correction: true       # learned tiers: scales × 1 / the module's output gain
//       allocation_estimate: compensated  # or plain: the encode the allocator scores tiers by
//       allocation_routing: true    # the allocator weighs experts by routing frequency
//       allocation_output_space: true  # gate/up errors rescaled to the expert's output
// plus the gptq knobs damp, act_order, min_tokens, blend_tokens (kept in the rule's integer
// options). gate_proj and up_proj of one expert always get the same tier. A vq rule needs
// calibration statistics from a file (--calib STATS) when it compensates or allocates. VQ is
// written in the compressed-tensors convention (format: compressed-tensors).

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/formats/weight_scheme.h"
#include "qs/ckpt/model/name_pattern.h"
#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {

enum class RecipeAction : std::uint8_t {
  Keep,
  CastBf16,
  CastF16,
  CastF32,
  Nvfp4,
  Int,
  Gptq,
  Fp8Block,
  Nvfp4Gptq,
  Vq,
};

std::optional<RecipeAction> parse_recipe_action(std::string_view text);
const char* recipe_action_name(RecipeAction action);
bool is_quantizing(RecipeAction action);
bool is_integer(RecipeAction action);
// nvfp4 and nvfp4-gptq: NVFP4 weights, a scale_method.
bool is_nvfp4(RecipeAction action);
// gptq and nvfp4-gptq, nvfp4 with the hessian scale method, and vq when it compensates or
// allocates (`vq`: the rule's options; nullptr counts a vq rule as needing them): needs
// calibration statistics.
bool needs_statistics(RecipeAction action, std::string_view scale_method,
                      const VqOptions* vq = nullptr);
// A vq scheme reads statistics when it compensates (GPTQ) or allocates among several tiers.
bool needs_statistics(const VqOptions& vq);

// A preset action name (int8, int8-channel, int4, int4-g32, gptq-int4, gptq-int8): its action
// and options.
std::optional<std::pair<RecipeAction, IntegerOptions>> parse_integer_preset(std::string_view text);

// A parsed layer selector, resolved against a model's layer counts when matching.
class LayerSelector {
 public:
  // Throws BadInput "recipe.invalid_layers" naming the text.
  static LayerSelector parse(std::string_view text);
  bool matches(std::uint32_t layer, const ModelLayout& layout) const;
  const std::string& text() const { return text_; }

 private:
  struct Term {
    enum class Kind : std::uint8_t { Range, First, Last, Mtp, All } kind;
    std::uint32_t low = 0;
    std::uint32_t high = 0;  // Range: inclusive; First/Last: the count in `low`
  };
  std::string text_;
  std::vector<Term> terms_;
};

struct RecipeRule {
  std::string name;  // for logs; "rule N" when the recipe gives none
  std::vector<TensorCategory> categories;
  std::vector<TensorRole> roles;
  std::vector<NamePattern> modules;
  std::optional<LayerSelector> layers;
  std::optional<bool> mtp;
  RecipeAction action = RecipeAction::Keep;
  std::string scale_method;  // empty: the recipe default
  IntegerOptions integer;    // int / gptq; damp, act_order, min_tokens for nvfp4-gptq and vq
  VqOptions vq;              // vq only

  // Whether the rule's match keys accept the tensor (the action's own restriction, that
  // quantizing rules only take Linear weights, is checked by the planner).
  bool matches(const ParsedTensorName& tensor, const ModelLayout& layout) const;
};

// 1 dB: the error holds 79 % of the weight's energy. Every working scheme is far above it
// (INT2 ~9 dB, NVFP4 and INT4 ~20 dB, 1-bit signs 4.4 dB); a weight decoded to all zeros is at
// 0 dB.
inline constexpr double kDefaultMinSnrDb = 1.0;

struct Recipe {
  std::string source;  // file path, or "command line"
  std::string description;
  OutputFormat format = OutputFormat::Modelopt;
  std::string scale_method = "max";
  std::optional<std::uint64_t> max_shard_bytes;
  std::optional<std::string> kv_cache;  // modelopt kv_cache_quant_algo ("FP8") or none
  // W4A4: NVFP4 activations too, with static input scales from calibration statistics.
  bool quantize_activations = false;
  // A quantized weight whose SNR (10·log10 Σw² / Σ(w − ŵ)²) is below this fails the job,
  // naming it: the scheme lost the weight (`min_snr_db:`; empty: kDefaultMinSnrDb).
  std::optional<double> min_snr_db;
  std::vector<RecipeRule> rules;
  // The recipe's own VQ tiers (`vq_tiers:`), by name; presets are not repeated here.
  std::map<std::string, VqTier> vq_tiers;
};

// Parses a recipe. `parameter_overrides` replace the recipe's `parameters:` defaults; an
// override of a parameter the recipe does not declare is an error. Unknown keys, unknown
// categories/roles/actions and bad selectors throw BadInput naming the file and rule.
Recipe parse_recipe(std::string_view yaml_text, const std::string& source,
                    const std::map<std::string, std::string>& parameter_overrides = {});
Recipe load_recipe(const std::filesystem::path& path,
                   const std::map<std::string, std::string>& parameter_overrides = {});

}  // namespace qs
