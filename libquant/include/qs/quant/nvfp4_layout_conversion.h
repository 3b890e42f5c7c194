#pragma once
// NVFP4 between its two checkpoint layouts, as a transform (formats-modelopt-nvfp4.md §2.1,
// formats-compressed-tensors.md §4.1):
//
//   modelopt            weight U8, weight_scale F8_E4M3, weight_scale_2 F32 [] (s2), input_scale
//   compressed-tensors  weight_packed U8, weight_scale F8_E4M3, weight_global_scale F32 [1]
//                       (1/s2), input_global_scale (the reciprocal of input_scale)
//
// Codes (two E2M1 values per byte, element 2i in the low nibble) and E4M3 block scales have
// the same bytes in both: they are carried over unchanged. Only the per-tensor scales change,
// to their fp32 reciprocal, which is what each format's consumer expects (modelopt multiplies
// by s2, compressed-tensors divides by its global scale).
//
// Does the reciprocal round-trip? 1/(1/x) == x in fp32 holds for most but not all x (a
// correctly rounded division can land one ulp off; tests/test_nvfp4_layout_conversion.cpp
// counts it): modelopt → compressed-tensors gives exactly the global scale our
// compressed-tensors quantizer writes (it stores 1.0f / s2 too), and converting back can move
// s2 by at most one ulp, which changes decoded weights by at most one ulp of their own.

#include <memory>

#include "qs/ckpt/plan.h"
#include "qs/ckpt/recipe.h"

namespace qs {

// Sources: the `from` layout's tensors in the order above (3, or 4 with the input scale);
// outputs: nvfp4_output_specs(module, rows, cols, to, with_input_scale). Throws BadInput
// "nvfp4.bad_global_scale" naming the tensor for a global or input scale that is not finite
// and positive, and "nvfp4.layout_mismatch" for tensors of the wrong dtype or size.
std::shared_ptr<const Transform> make_nvfp4_layout_conversion(OutputFormat from, OutputFormat to,
                                                              bool with_input_scale);

}  // namespace qs
