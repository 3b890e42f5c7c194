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

// The detected format's structural check (WeightFormat::check): dtypes, shapes and element
// counts of a decodable module's tensors against each other; `declared_bits` (0: none) is the
// config's width, else the packed width decides it (7-bit codes pack like 8-bit ones,
// ⌊32/b⌋ = 4 per word, so only a config can say 7). Reads only weight_shape. Throws BadInput
// `kind` naming the file and tensor at fault; for formats we do not decode, naming the module.
QuantizedWeight checked_quantized_weight(const std::string& module,
                                         const ModuleParameters& parameters, int declared_bits,
                                         const std::string& kind);

}  // namespace qs
