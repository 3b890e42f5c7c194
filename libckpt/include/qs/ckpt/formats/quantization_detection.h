#pragma once
// Recognises how a checkpoint is quantized, from its tensor headers and config alone, so that
// `inspect` stays fast on a 1.5 TB model. The per-format facts are the registry's
// (weight_format.h); the functions below are shorthands over it.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/formats/weight_format.h"
#include "qs/ckpt/io/checkpoint.h"

namespace qs {

// Every module of the checkpoint with its tensors (module path → parameters). Tensors whose
// name has no dot (none in our models) are left out.
std::map<std::string, ModuleParameters> modules_of(const Checkpoint& checkpoint);

// The layout the module's tensors reveal (from dtypes and which companions exist). Modules
// without a weight or weight_packed (norms with only a bias, ...) are Unrecognized.
WeightLayout classify_module(const ModuleParameters& parameters);

// The module's weight shape [out, in] as engines see it, whatever the storage: dense, int8
// and fp8 the weight's own shape; NVFP4 [rows, 2 × packed bytes]; pack-quantized the
// weight_shape tensor (16 bytes, the only data this reads). nullopt when the tensors do not
// say (Unrecognized layouts, a malformed weight_shape).
std::optional<Shape> logical_weight_shape(const ModuleParameters& parameters, WeightLayout layout);

const char* weight_layout_name(WeightLayout layout);

// NVFP4 in either layout.
bool is_nvfp4_layout(WeightLayout layout);
// The quantized layouts we write and read back (WeightFormat::decodable): NVFP4 (either layout)
// and pack-quantized.
bool is_quantized_layout(WeightLayout layout);

// The integer scheme a pack-quantized module's tensors hold: bits from the packed width (4,
// 8, 2, 3, 5, 6 tried in that order: with padding to whole words a narrow K fits several, and
// 7-bit codes pack like 8-bit ones), symmetric
// when there are no zero points, group size from the number of scale columns (one column:
// per channel). Throws BadInput `error_kind` naming `file` and the module when the tensors
// cannot say.
IntegerOptions pack_quantized_options(const std::string& module, const ModuleParameters& parameters,
                                      const std::string& file, const std::string& error_kind);

struct LayoutCount {
  std::uint64_t modules = 0;
  std::uint64_t bytes = 0;  // all tensors of those modules, companions included
};

struct QuantizationDetection {
  // Per layout label, over every module with a weight (dense ones included). The label is
  // weight_layout_name(), with the bit width for pack-quantized ("pack-quantized-int4"), which
  // comes from the 16-byte weight_shape tensor: the only data this reads.
  std::map<std::string, LayoutCount> layouts;
  // What config.json (quantization_config) and hf_quant_config.json declare, if anything:
  // e.g. "compressed-tensors/nvfp4-pack-quantized", "modelopt/NVFP4".
  std::string declared;
  // One-word summary: "none", one quantized layout label ("nvfp4-modelopt",
  // "pack-quantized-int4", "int8", ...), or "mixed" when several are present.
  std::string summary;
};

QuantizationDetection detect_quantization(const Checkpoint& checkpoint);

}  // namespace qs
