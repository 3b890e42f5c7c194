#pragma once
// Quantized Linears back to a float weight, as a transform: the reference decoders of this
// library (fp4::dequantize, intq::unpack + intq::dequantize), then round-to-nearest-even to
// the target dtype. So a dequantized checkpoint holds exactly what `validate --ref` and the
// runner compute from the quantized one. Used by `mtp extract` (seed 003: the NVFP4 MTP layer
// to BF16, then requantized) and by `quantize` to read FP8 block-scaled sources.

#include <memory>
#include <span>

#include "qs/ckpt/formats/weight_format.h"  // DequantizeRequest
#include "qs/ckpt/plan/plan.h"             // Transform

namespace qs {

// Sources: the format's parameters in the order its check (weight_format.h) gives them, e.g.
// NVFP4 codes, block scales, global scale; pack-quantized weight_packed, weight_scale,
// weight_shape[, weight_zero_point]; FP8 block-scaled weight, weight_scale_inv. One output:
// the [rows, cols] weight in request.dtype. Throws BadInput "dequantize.bad_input" naming the tensor when the bytes do not fit the layout.
std::shared_ptr<const Transform> make_dequantize_transform(const DequantizeRequest& request);

// The transform's decoding without the final rounding, through the decoder of the request's
// format (throws Internal for a format with none): the [rows, cols] weight in f32 into
// `out`, from the same sources (`validate --ref` compares this with the reference).
void dequantize_weight(const DequantizeRequest& request, std::span<const SourceTensor> sources,
                       std::span<float> out);

}  // namespace qs
