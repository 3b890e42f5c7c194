#pragma once
// NVFP4 quantizing transforms: per member [codes, block scales, global scale (, input scale)] in
// the layout's scale convention (weight_format.h: modelopt stores s2, compressed-tensors its
// reciprocal, a divisor). `action: nvfp4` quantizes each block on its own (any scale method;
// hessian reads the statistics); `action: nvfp4-gptq` runs GPTQ on the NVFP4 grid.

#include <memory>

#include "qs/ckpt/plan/plan.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/quant/quantize_transforms.h"

namespace qs {

// Throws BadInput "plan.unknown_scale_method" for a method NVFP4 lacks.
std::shared_ptr<const Transform> make_nvfp4_transform(const QuantizeRequest& request,
                                                      QuantizerSettings& settings);

}  // namespace qs
