#pragma once
// The quantizing transforms the quantize planner asks for (qs/ckpt/quantize_plan.h), built on
// the numerics of this library.

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "qs/ckpt/plan.h"
#include "qs/ckpt/quantize_plan.h"

namespace qs {

// What to do with NaN / ±Inf in a weight that is being quantized.
enum class NanPolicy : std::uint8_t {
  Error,  // refuse, naming the tensor and the count (default: a corrupt source is a bug)
  Zero,   // quantize as if they were 0, and report the count
};
std::optional<NanPolicy> parse_nan_policy(std::string_view text);

enum class ComputeDevice : std::uint8_t { Auto, Cpu, Cuda };

struct QuantizerSettings {
  NanPolicy nan_policy = NanPolicy::Error;
  ComputeDevice device = ComputeDevice::Auto;
};

// Throws BadInput "plan.unknown_scale_method" for a method the format does not have, before
// any data is read.
std::shared_ptr<const Transform> make_quantize_transform(const QuantizeRequest& request,
                                                         const QuantizerSettings& settings);

}  // namespace qs
