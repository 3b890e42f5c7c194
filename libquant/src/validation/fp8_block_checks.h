#pragma once
// The "fp8-block" check of `validate`: every FP8 block-scaled module (DeepSeek-V3 layout,
// docs/formats/fp8-block.md) has its weight_scale_inv, of the grid that covers the weight, F32,
// every scale finite and positive; and an F8_E4M3 weight without any scale is reported. Reads
// the scale tensors only. Internal to libquant: validate_nvfp4() calls it.

#include <map>
#include <string>

#include "qs/ckpt/formats/quantized_weight.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/validate/validation.h"

namespace qs::validation {

// The modules that passed (module path → checked weight), for `--ref` to decode.
std::map<std::string, QuantizedWeight> check_fp8_block(const Checkpoint& checkpoint,
                                                       ValidationReport& report);

}  // namespace qs::validation
