#pragma once
// The quantize planner: recipe + source checkpoint headers → Plan, the per-tensor decision
// log, and what the output configs must say. Reads no tensor data. Everything a rule cannot
// do is an error here, before any byte is written: a quantizing rule on a shape that does not
// divide the block size, on a non-float dtype, or splitting an engine-fused pair across
// schemes or scale methods; a source that is already quantized.
//
// The math is not here (libckpt has none): the caller passes a factory that makes the
// quantizing transforms (libquant implements them).

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/formats/quantized_weight.h"
#include "qs/ckpt/plan/calibration_store.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/plan/plan.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/formats/vq_tier.h"
#include "qs/ckpt/formats/weight_format.h"
#include "qs/ckpt/plan/recipe.h"

namespace qs {

// What a quantizing transform is asked to do for one plan item: quantize `member_count`
// weights (the members of one fused group, or one lone Linear) with one shared global scale,
// writing per member the tensors of its format's output_specs (weight_format.h) in that
// order.
//
// FP8 block-scaled sources (DeepSeek-V3's weight + weight_scale_inv) are read through the same
// factory: a member whose `encoded_members` entry is set has those two sources, decoded to
// BF16 before anything else (so one command gives the bytes converting to BF16 first would).
// An FP8 Linear no rule quantizes is asked for with action keep / bf16 / f16 / f32 and one
// member: it is decoded to the entry's dtype, its scale dropped.
struct QuantizeRequest {
  RecipeAction action = RecipeAction::Nvfp4;
  OutputFormat format = OutputFormat::Modelopt;
  std::string scale_method;
  std::size_t member_count = 1;
  // W4A4: the calibrated input amax each member's activations scale from; empty for W4A16.
  std::vector<float> input_amax;
  IntegerOptions integer;  // int / gptq
  // gptq, nvfp4-gptq, nvfp4/hessian: the statistics the members' Hessians come from (outlives
  // the job).
  const CalibrationStatistics* calibration = nullptr;
  // One entry per member when any is stored FP8 block-scaled; empty otherwise.
  std::vector<std::optional<DequantizeRequest>> encoded_members;
  // vq: the members' tier (gate/up of one expert share it), the codebook their codes index
  // (owned by the VqAssignment the plan was made with, which outlives the job), and the rule's
  // options; the GPTQ knobs are in `integer`. Each member writes vq_codes then vq_scales.
  std::optional<VqTier> vq_tier;
  const VqCodebook* vq_codebook = nullptr;
  VqOptions vq;
};
using QuantizeTransformFactory =
    std::function<std::shared_ptr<const Transform>(const QuantizeRequest&)>;

// One line of the decision log.
struct TensorDecision {
  std::string tensor;
  RecipeAction action = RecipeAction::Keep;
  std::string scale_method;  // nvfp4 only
  IntegerOptions integer;    // int / gptq only (and the gptq knobs of nvfp4-gptq and vq)
  std::string rule;          // the rule's name, or "no rule matched (kept)"
  VqOptions vq;              // vq only: the rule's menu and options
  std::optional<VqTier> vq_tier;  // vq, in plan_quantization's decisions: the module's tier
};

struct QuantizePlan {
  Plan plan;
  std::vector<TensorDecision> decisions;  // one per source tensor, in source order
  QuantizedModel model;
};

// What a decision's scheme is called in plans and logs: "nvfp4/max", "nvfp4-gptq/hessian",
// "int4-g128-asym",
// "gptq/int4-g128-asym", "vq/vq2" (the assigned tier; before assignment the menu,
// "vq/vq1|vq2|vq3@1.9"), "keep".
std::string scheme_label(const TensorDecision& decision);

// ---- vector quantization: the plan-time hooks (docs/formats/vq.md) ----
// A Linear a vq rule decides, before its tier is chosen: what the VQ preparation (libquant,
// qs/quant/vq_preparation.h) samples, fits codebooks for and allocates tiers over.
struct VqCandidate {
  std::string module;  // checkpoint module path ("model.layers.3.mlp.experts.7.gate_proj")
  std::string tensor;  // its weight tensor
  std::uint64_t rows = 0, cols = 0;
  DType dtype = DType::BF16;  // the weight's (and so the scales') dtype
  std::optional<std::uint32_t> layer;
  std::optional<std::uint32_t> expert;
  std::string rule;           // the deciding rule's name
  std::size_t rule_index = 0;  // its index in recipe.rules (candidates of one rule allocate together)
  VqOptions options;
  std::optional<VqTier> pinned;  // the tier, when the rule's menu has one entry
  // Candidates with the same tie key must get the same tier (engines fuse gate_proj and
  // up_proj of one expert into one tensor); a lone module's key is its own path.
  std::string tie;
};

// Every Linear a vq rule of `recipe` decides, in source order; the same checks as
// plan_quantization (shape, dtype, format) so a bad recipe fails before any preparation.
std::vector<VqCandidate> vq_candidates(const Checkpoint& source, const Recipe& recipe);

// What the VQ preparation decided: each module's tier and codebook tensor, and the codebooks'
// values (a codebook tensor is named "vq_codebooks.<tier>" for model scope,
// "model.layers.<L>.mlp.experts.vq_codebooks.<tier>" for layer scope: vq_codebook_tensor).
struct VqAssignment {
  std::map<std::string, VqTier> tier_of;         // module → tier
  std::map<std::string, std::string> codebook_of;  // module → codebook tensor name
  std::map<std::string, VqCodebook> codebooks;     // codebook tensor name → values
};

// The codebook tensor of `tier` for a module of `layer` under `scope`.
std::string vq_codebook_tensor(const VqTier& tier, VqCodebookScope scope,
                               std::optional<std::uint32_t> layer);

// `calibration` supplies activation ranges and, for gptq and nvfp4-gptq rules and the nvfp4
// hessian scale method, Hessians (missing: error
// "plan.needs_calibration"; a module without statistics is "calibration.missing_module",
// except routed experts, which GPTQ rounds to nearest when the router never picked them;
// statistics of another width are "calibration.shape_mismatch"); a recipe with `activations: nvfp4`
// needs it ("plan.needs_calibration"). All routed experts of a layer share one input amax per
// projection (gate/up, down), the max over those calibrated, as engines use one input scale
// for them; a non-expert module without statistics is "calibration.missing_module".
// Activation ranges are fixed at plan time, so W4A4 needs the statistics file (a
// CalibrationStore); Hessians only need statistics that arrive before the transform runs (the
// layer-pipelined job's, calibration_statistics.h), checked here by promised_in_features.
//
// Item order: a plan with calibrated decisions (reads_statistics) gets its decoder-layer items in layer order
// (layers.2 before layers.10, the MTP layer last; stable within a layer), each non-layer item
// (embeddings, norm, lm_head) keeping its place. Safetensors headers list tensors
// alphabetically, so without this the executor would ask for layer 10's statistics before
// layer 2's; the pipelined job calibrates one layer at a time and needs them in order. Both
// flows (statistics file or pipelined) use the same order, so they write the same bytes.
//
// VQ decisions take their tier and codebook from `vq` (a VQ rule without it, or a module it
// lacks, is Internal "plan.vq_unassigned"); each codebook tensor becomes one item with no
// sources writing its values (make_vq_codebook_transform). A VQ rule that compensates or
// allocates needs a statistics file ("plan.vq_needs_statistics"); inputs not a multiple of
// 128 or of the tier's d are "plan.vq_shape".
QuantizePlan plan_quantization(const Checkpoint& source, const Recipe& recipe,
                               const QuantizeTransformFactory& make_quantizer,
                               const CalibrationStatistics* calibration = nullptr,
                               const VqAssignment* vq = nullptr);

// Writes a codebook's values ([K, d]) in its dtype: a float conversion, no math.
std::shared_ptr<const Transform> make_vq_codebook_transform(const VqCodebook* codebook);

// Whether a decision's transform reads calibration statistics (gptq, nvfp4-gptq, the nvfp4
// hessian scale method), and whether any rule of
// the recipe makes such decisions. The one place that says which schemes are calibrated: the
// planner's checks and item order and the pipelined job's waiting follow it.
bool reads_statistics(const TensorDecision& decision);
bool needs_calibration_statistics(const Recipe& recipe);

// The decoder layer an item belongs to (that of its first source), nullopt for non-layer items.
std::optional<std::uint32_t> item_layer(const PlanItem& item);

}  // namespace qs
