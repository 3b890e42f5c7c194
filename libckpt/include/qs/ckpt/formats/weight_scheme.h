#pragma once
// The vocabulary of quantization schemes, shared by what reads checkpoints (detection, the
// weight-format registry, config parsing) and what writes them (recipes, planners): an
// integer scheme's numbers and the config convention a quantized checkpoint is written in.
// Recipes (plan/recipe.h) build on it; nothing here knows about YAML or plans.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

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

// The config convention a quantized checkpoint is written in: NVIDIA modelopt
// (hf_quant_config.json + a flat quantization_config) or compressed-tensors.
enum class OutputFormat : std::uint8_t { Modelopt, CompressedTensors };
std::optional<OutputFormat> parse_output_format(std::string_view text);
const char* output_format_name(OutputFormat format);

}  // namespace qs
