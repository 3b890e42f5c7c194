#pragma once
// One quantized Linear's stored tensors, checked against each other before any reader touches
// their bytes: what the dequantizer (libquant's dequantize_weight) is asked to decode and from
// which tensors. `mtp extract` plans its dequantize items with it and the runner loads every
// quantized weight through it, so a malformed module is the same error everywhere.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/formats/compressed_tensors_config.h"
#include "qs/ckpt/formats/quantization_detection.h"

namespace qs {

// What a dequantizing transform is asked to do for one quantized Linear.
struct DequantizeRequest {
  WeightLayout layout = WeightLayout::Nvfp4Modelopt;
  std::uint64_t rows = 0, cols = 0;
  int bits = 0;              // pack-quantized only
  std::uint64_t groups = 0;  // pack-quantized scale columns
  DType dtype = DType::BF16;
};

struct QuantizedWeight {
  DequantizeRequest request;
  // In dequantize_transform.h's order: NVFP4 codes, block scales, global scale;
  // pack-quantized weight_packed, weight_scale, weight_shape[, weight_zero_point]; FP8
  // block-scaled weight, weight_scale_inv.
  std::vector<TensorLocation> sources;
};

// The bit width compressed-tensors reads a pack-quantized module with: the num_bits of the
// pack-quantized int config group covering it. Parsed once from config.json; a config that is
// absent, of another method or unreadable declares nothing (validate reports that).
class DeclaredPackBits {
 public:
  explicit DeclaredPackBits(const nlohmann::json& config);
  // 0 when no pack-quantized int group covers `module`.
  int operator()(const std::string& module) const;

 private:
  std::optional<CompressedTensorsConfig> config_;
};

// Checks dtypes, shapes and element counts of an NVFP4 (either layout), pack-quantized or FP8
// block-scaled module's tensors against each other (FP8: also that every block scale is finite
// and positive, the one tensor besides weight_shape this reads); `declared_bits` (0: none) is the config's width, else
// the packed width decides it (7-bit codes pack like 8-bit ones, ⌊32/b⌋ = 4 per word, so
// only a config can say 7). Reads only weight_shape. Throws BadInput `kind` naming the file
// and tensor at fault; for other layouts, naming the module.
QuantizedWeight checked_quantized_weight(const std::string& module,
                                         const ModuleParameters& parameters, int declared_bits,
                                         const std::string& kind);

}  // namespace qs
