#pragma once
// Integer quantizing transforms (round-to-nearest and GPTQ) writing compressed-tensors
// pack-quantized tensors per member: weight_packed, weight_scale, weight_shape and, for
// asymmetric schemes, weight_zero_point (the pack-quantized format's output_specs,
// qs/ckpt/formats/weight_format.h).

#include <memory>

#include "qs/ckpt/plan/plan.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/quant/quantize_transforms.h"

namespace qs {

// Throws BadInput "plan.unknown_observer" for an observer we lack.
std::shared_ptr<const Transform> make_integer_transform(const QuantizeRequest& request,
                                                        QuantizerSettings& settings);

}  // namespace qs
