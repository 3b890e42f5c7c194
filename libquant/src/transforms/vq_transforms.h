#pragma once
// The vector-quantizing transform (docs/algorithms/vq.md): each member's weight encoded with its
// tier's shared codebook by GPTQ-VQ (or nearest codeword with `compensation: none`), written as
// the vq format's vq_codes (packed indices, I32) and vq_scales (the weight's dtype) per member
// (qs/ckpt/formats/weight_format.h).

#include <memory>

#include "qs/ckpt/plan/plan.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/quant/quantize_transforms.h"

namespace qs {

// Internal error "vq.request" when the request lacks its tier or codebook (a planner bug).
std::shared_ptr<const Transform> make_vq_transform(const QuantizeRequest& request,
                                                   QuantizerSettings& settings);

}  // namespace qs
