#pragma once
// The FP8 block-scaled modules of a checkpoint a job is about to read (quantize, calibrate,
// eval, generate, splice), every one checked before any byte is written: so a DeepSeek FP8
// source with a missing or malformed weight_scale_inv is one error naming file and tensor.

#include <map>
#include <string>

#include "qs/ckpt/formats/quantized_weight.h"
#include "qs/ckpt/io/checkpoint.h"

namespace qs {

// Module path → its checked weight (request: Fp8Block, rows, cols; sources weight,
// weight_scale_inv). Throws BadInput:
//   fp8.missing_scale   an F8_E4M3 Linear weight with no weight_scale_inv (nor weight_scale)
//   fp8.invalid_scale   a weight_scale_inv not F32, of a grid that does not cover the weight
//                       ([⌈N/128⌉, ⌈K/128⌉]), or holding a value not finite and positive
//   fp8.block_size      FP8 modules, but config.json does not declare quant_method fp8 with
//                       weight_block_size [128, 128]
// Reads the scale tensors (4 bytes per 16384 weights), nothing else.
std::map<std::string, QuantizedWeight> fp8_block_modules(const Checkpoint& checkpoint);

}  // namespace qs
