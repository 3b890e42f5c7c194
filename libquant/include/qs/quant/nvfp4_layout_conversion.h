#pragma once
// NVFP4 between its two checkpoint layouts, as a transform (docs/formats/modelopt-nvfp4.md,
// "Checkpoint tensors"; docs/formats/compressed-tensors.md, "nvfp4-pack-quantized"):
//
//   modelopt            weight U8 [rows, cols/2], weight_scale F8_E4M3 [rows, cols/16],
//                       weight_scale_2 F32 [] (s2 = amax/2688, a multiplier),
//                       input_scale F32 [] (amax_in/2688) with activations
//   compressed-tensors  weight_packed U8, weight_scale F8_E4M3 (same shapes),
//                       weight_global_scale F32 [1] (2688/amax, a divisor),
//                       input_global_scale F32 [1] with activations
//
// Codes and E4M3 block scales have the same bytes in both: two E2M1 codes per byte with the
// even column in the low nibble, block scales row-major and not swizzled, already relative to
// the global scale. They are carried over unchanged. Only the per-tensor scales change, to
// their fp32 reciprocal (one correctly rounded division), because modelopt decodes
// code·scale·s2 and compressed-tensors code·(scale/gs). compressed-tensors' own converter
// (entrypoints/convert/converters/modelopt_nvfp4.py) does exactly this: renames weight →
// weight_packed, keeps weight_scale, and writes 1 / weight_scale_2 and 1 / input_scale in fp32.
//
// Does the reciprocal round-trip? Measured (bench/fp32_reciprocal_round_trip.cpp,
// tests/test_nvfp4_layout_conversion.cpp):
//  * 1/(1/x) != x for 17.16 % of the positive normal floats whose reciprocal is normal
//    (362,693,016 of 2,113,929,217 in [2^-126, 2^126]), never by more than one ulp. Which x
//    fail depends on the mantissa alone: every binade counts 1,439,258 of its 8,388,608. The
//    subnormal x with a finite reciprocal all round-trip.
//  * The bundled model quantized by the seed 001 recipe (boundary_layers=0, W4A4; 147 NVFP4
//    modules, 67 distinct s2):
//    modelopt → compressed-tensors gives exactly the weight_global_scale our compressed-tensors
//    quantizer writes (1.0f / s2 too), and the codes and block scales bit for bit. Back to
//    modelopt, 9 of the 67 s2 values (19 modules) move by one ulp; codes and block scales
//    still come back bit for bit.
//  * Decoded weights (fp4::dequantize, code·scale·s2, as validate does) are identical wherever
//    s2 came back; in the 19 modules where it moved, 70 % of the weights change by one ulp and
//    1.2 % by two (a one-ulp s2 can move a product by two). compressed-tensors' own decode,
//    code·(scale/gs), already differs from modelopt's by up to two ulps in 26 % of the weights,
//    conversion or not.
//  * input_global_scale after modelopt → compressed-tensors is one ulp away from what our
//    compressed-tensors quantizer writes in 65 of 147 modules: that quantizer computes
//    2688/amax_in directly, the conversion can only invert the rounded amax_in/2688.
// So the conversion is lossless for codes and block scales and costs at most one fp32 ulp of
// a per-tensor scale, two ulps of a decoded weight: 2^-22 relative, far below the NVFP4 grid
// (the E4M3 block scale steps by 12.5 %, E2M1 by a third at least).

#include <memory>
#include <string>
#include <vector>

#include "qs/ckpt/plan/plan.h"
#include "qs/ckpt/plan/recipe.h"

namespace qs {

// Sources: the `from` layout's tensors in the order above (3, or 4 with the input scale);
// outputs: nvfp4_output_specs(module, rows, cols, to, with_input_scale). Per-tensor scales
// are read from shape [] or [1] in either layout. Throws BadInput naming the tensor:
// "nvfp4.layout_mismatch" for a tensor of the wrong dtype or shape (codes and block scales
// that disagree, or do not fill the outputs), "nvfp4.bad_global_scale" for a global or input
// scale that is not finite and positive or whose reciprocal is not a normal fp32 (it would
// overflow to Inf or lose precision as a subnormal). `from` == `to` is a caller bug (Internal
// "nvfp4.same_layout").
std::shared_ptr<const Transform> make_nvfp4_layout_conversion(OutputFormat from, OutputFormat to,
                                                              bool with_input_scale);

// The tensor names of NVFP4 module `module` in `layout`, in the order the conversion takes
// them as sources (and writes them as outputs): codes, block scales, global scale, and the
// input scale when `with_input_scale`.
std::vector<std::string> nvfp4_layout_tensor_names(const std::string& module, OutputFormat layout,
                                                   bool with_input_scale);

}  // namespace qs
