#pragma once
// FP8 block-scaled Linears as DeepSeek-V3 / Kimi-K2 ship them and vLLM / transformers load
// them (docs/formats/fp8-block.md): the tensor names and shapes, the config block, and the
// checks a reader runs before it trusts a module. The numerics are libquant's
// (qs/quant/fp8_block_quantizer.h).
//
//   <module>.weight            F8_E4M3 [N, K]
//   <module>.weight_scale_inv  F32 [⌈N/128⌉, ⌈K/128⌉], a multiplier: w = e4m3 · scale
//   config.json quantization_config: {quant_method: fp8, activation_scheme: dynamic,
//                                     fmt: e4m3, weight_block_size: [128, 128]}

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"

namespace qs {

inline constexpr std::uint64_t kFp8BlockRows = 128;
inline constexpr std::uint64_t kFp8BlockCols = 128;
inline constexpr const char* kFp8ScaleParameter = "weight_scale_inv";

// [⌈rows/128⌉, ⌈cols/128⌉]
Shape fp8_block_scale_shape(std::uint64_t rows, std::uint64_t cols);

// The tensors an FP8 block-scaled Linear `module` of weight shape [rows, cols] is stored as,
// in the order the quantizing transform writes them: weight, weight_scale_inv.
std::vector<TensorSpec> fp8_block_output_specs(const std::string& module, std::uint64_t rows,
                                               std::uint64_t cols);

// The quantization_config block for config.json. `unquantized` lists the Linears left in a
// float dtype by exact module name; it is written as vLLM's `ignored_layers` and as
// transformers' `modules_to_not_convert` (vLLM falls back to the latter).
nlohmann::json fp8_block_config_block(const std::vector<std::string>& unquantized);

// Whether config.json declares FP8 (quant_method "fp8").
bool declares_fp8(const nlohmann::json& config);

// For readers of a checkpoint holding FP8 block-scaled modules: config.json must declare
// quant_method fp8 with weight_block_size [128, 128] (the only tiling engines and we read).
// Throws BadInput "fp8.block_size" naming `config_file` otherwise (absent included: without
// it vLLM reads the scale as one per tensor).
void require_supported_fp8_config(const nlohmann::json& config, const std::string& config_file);

}  // namespace qs
