#pragma once
// The `dequantize` planner: a quantized checkpoint → a float one. Every Linear stored in a
// format quantsmith decodes (any registry format: NVFP4, pack-quantized, FP8 block-scaled,
// VQ) becomes one `<module>.weight` in the chosen float dtype, its companions (and VQ
// codebooks) dropped; every other tensor is copied. The decoding is libquant's (the factory),
// so the weights are exactly what the runner and `validate --ref` compute. Consumers that
// cannot read a format evaluate its fake-quantized weights this way; the VQ conformance check
// compares an independent decoder against it.

#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/plan/mtp_extract_plan.h"  // DequantizeTransformFactory
#include "qs/ckpt/plan/plan.h"

namespace qs {

struct DequantizePlan {
  Plan plan;
  std::vector<std::string> dequantized_modules;  // in source order
  std::size_t copied_tensors = 0;
};

// `dtype`: BF16, F16 or F32 (else BadInput "cli.bad_dtype"). A quantized module that does not
// fit together is its format's check error ("dequantize.bad_input"); a module stored in a
// quantized format quantsmith cannot decode is "dequantize.unsupported_layout".
DequantizePlan plan_dequantize(const Checkpoint& source, DType dtype,
                               const DequantizeTransformFactory& make_dequantizer);

}  // namespace qs
