#pragma once
// FP8 block-scaled weights in quantize jobs: writing them (--scheme fp8-block) and reading
// them as a source (DeepSeek-V3 checkpoints), for make_quantize_transform.

#include <memory>

#include "qs/ckpt/plan/plan.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/quant/quantize_transforms.h"

namespace qs {

// Each member to FP8 E4M3 + one F32 scale per 128 × 128 block (outputs per member: weight,
// weight_scale_inv), after the NaN/Inf policy; reports each member's error energy.
std::shared_ptr<const Transform> make_fp8_block_transform(const QuantizerSettings& settings);

// `inner` run on the members as BF16: each member whose `encoded_members` entry is set comes as
// two sources (weight, weight_scale_inv) and is decoded first (DeepSeek's weight_dequant, the
// product rounded to BF16); the others pass through.
std::shared_ptr<const Transform> with_decoded_members(
    std::shared_ptr<const Transform> inner,
    std::vector<std::optional<DequantizeRequest>> encoded_members);

}  // namespace qs
