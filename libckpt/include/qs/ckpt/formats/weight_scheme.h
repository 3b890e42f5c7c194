#pragma once
// The vocabulary of quantization schemes, shared by what reads checkpoints (detection, the
// weight-format registry, config parsing) and what writes them (recipes, planners): an
// integer scheme's numbers and the config convention a quantized checkpoint is written in.
// Recipes (plan/recipe.h) build on it; nothing here knows about YAML or plans.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qs/ckpt/formats/vq_tier.h"

namespace qs {

// group_size of a scheme with one scale per output channel.
inline constexpr std::int64_t kChannelGroup = -1;

// GPTQ's default blend_tokens (docs/algorithms/gptq.md, "Few-token experts" says why).
inline constexpr std::uint64_t kDefaultBlendTokens = 512;

// An integer scheme as a recipe states it (libquant turns it into numerics).
struct IntegerOptions {
  int bits = 4;
  bool symmetric = false;
  std::int64_t group_size = 128;  // kChannelGroup: per output channel
  std::string observer = "minmax";
  double damp = 0.01;            // gptq
  bool act_order = true;         // gptq
  std::uint64_t min_tokens = 0;  // gptq: below this, round-to-nearest (0: any token count)
  // gptq: a routed expert with fewer calibration tokens is filled up to this many with the
  // layer's pooled expert statistics (0: never; docs/algorithms/gptq.md, "Few-token experts").
  std::uint64_t blend_tokens = kDefaultBlendTokens;
  // gptq: also score round-to-nearest on the same grid, the summary's baseline (false saves a
  // rows·cols² product per matrix on huge runs; the report then says "not computed").
  bool report_rtn = true;

  // "int4-g128-asym", "int8-channel-sym": names the numerics, for plans, logs and configs.
  std::string label() const;
  bool operator==(const IntegerOptions&) const = default;
};

// A vector-quantization scheme as a recipe states it (docs/formats/vq.md; the `vq` action of
// plan/recipe.h). The GPTQ knobs (damp, act_order, min_tokens, blend_tokens) are not repeated
// here: a vq rule keeps them in its IntegerOptions, as nvfp4-gptq does.
enum class VqCodebookScope : std::uint8_t { Model, Layer };  // one codebook per tier for ...
enum class VqCompensation : std::uint8_t { Gptq, None };     // GPTQ error feedback, or none
enum class VqMetricChoice : std::uint8_t { Mahalanobis, Euclidean };
enum class VqUpdateChoice : std::uint8_t { Exact, Diagonal };
// What the tier allocator scores each tier by: the encode the job writes (GPTQ-VQ as the rule
// compensates, then the output-gain correction) or a plain nearest-codeword encode.
enum class VqAllocationEstimate : std::uint8_t { Compensated, Plain };

struct VqOptions {
  // The menu: one tier (every module of the rule gets it) or several (the allocator chooses
  // per module for `target_bpw`).
  std::vector<VqTier> tiers;
  // Average bits per weight (scale bits included) over the modules of allocating rules;
  // ignored with one tier.
  std::optional<double> target_bpw;
  VqCodebookScope codebooks = VqCodebookScope::Model;
  VqCompensation compensation = VqCompensation::Gptq;
  VqMetricChoice metric = VqMetricChoice::Mahalanobis;
  VqUpdateChoice update = VqUpdateChoice::Exact;
  std::uint32_t refine = 0;   // codebook refinement rounds (re-fit centroids, re-encode)
  bool refit_scales = false;  // least-squares group scales with codes fixed
  // Learned tiers with statistics: each module's group scales × 1 / its output gain
  // tr(Ŵ·H·Wᵀ) / tr(W·H·Wᵀ), undoing the shrinkage of low-bit codes (docs/algorithms/vq.md).
  bool gain_correction = true;
  // The allocator's error estimate (docs/algorithms/vq.md, "Bit allocation").
  VqAllocationEstimate allocation_estimate = VqAllocationEstimate::Compensated;
  bool allocation_routing = true;       // errors × the expert's routing frequency
  bool allocation_output_space = true;  // gate/up errors rescaled to the expert's output

  bool allocated() const { return tiers.size() > 1; }
  // The tier every module gets when the menu has one entry.
  std::optional<VqTier> pinned() const;
  // "vq2", "vq1|vq2|vq3@1.9": the menu (and target), for plans and logs.
  std::string label() const;
  bool operator==(const VqOptions&) const = default;
};
const char* vq_scope_name(VqCodebookScope scope);              // "model", "layer"
const char* vq_compensation_name(VqCompensation compensation);  // "gptq", "none"
const char* vq_metric_name(VqMetricChoice metric);             // "mahalanobis", "euclidean"
const char* vq_update_name(VqUpdateChoice update);             // "exact", "diagonal"

// The config convention a quantized checkpoint is written in: NVIDIA modelopt
// (hf_quant_config.json + a flat quantization_config) or compressed-tensors.
enum class OutputFormat : std::uint8_t { Modelopt, CompressedTensors };
std::optional<OutputFormat> parse_output_format(std::string_view text);
const char* output_format_name(OutputFormat format);

}  // namespace qs
