#pragma once
// Quantized Linears back to a float weight, as a transform: the reference decoders of this
// library (fp4::dequantize, intq::unpack + intq::dequantize), then round-to-nearest-even to
// the target dtype. So a dequantized checkpoint holds exactly what `validate --ref` and the
// runner compute from the quantized one. Used by `mtp extract` (seed 003: the NVFP4 MTP layer
// to BF16, then requantized) and by `quantize` to read FP8 block-scaled sources.

#include <memory>
#include <span>

#include "qs/ckpt/plan/mtp_extract_plan.h"
#include "qs/ckpt/plan/plan.h"
#include "qs/ckpt/formats/quantization_detection.h"

namespace qs {

// Sources, by layout (mtp_extract_plan.cpp lists them in this order):
//   Nvfp4Modelopt           weight, weight_scale, weight_scale_2
//   Nvfp4CompressedTensors  weight_packed, weight_scale, weight_global_scale
//   PackQuantized           weight_packed, weight_scale, weight_shape[, weight_zero_point]
//   Fp8Block                weight (F8_E4M3), weight_scale_inv (F32 per 128 × 128 block)
// One output: the [rows, cols] weight in request.dtype. Throws BadInput
// "dequantize.bad_input" naming the tensor when the bytes do not fit the layout.
std::shared_ptr<const Transform> make_dequantize_transform(const DequantizeRequest& request);

// The transform's decoding without the final rounding: the [rows, cols] weight in f32 into
// `out`, from the same sources (`validate --ref` compares this with the reference).
void dequantize_weight(const DequantizeRequest& request, std::span<const SourceTensor> sources,
                       std::span<float> out);

}  // namespace qs
