#pragma once
// A compressed-tensors quantization_config read back (formats-compressed-tensors.md §2): each
// config group's weight arguments and targets, the ignore list, and which group covers a
// module. `validate` checks tensors against it; `splice` reads the schemes of its sources.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/name_pattern.h"

namespace qs {

// One config group's weight arguments, with compressed-tensors' defaults for absent keys
// (QuantizationArgs: num_bits 8, symmetric, type int; strategy inferred from group_size).
struct ConfigGroupArguments {
  std::string name;
  std::string format;  // the group's own, else the top-level one
  std::string type;    // "int", "float", or "" when the group quantizes no weights
  int bits = 8;
  bool symmetric = true;
  std::string strategy;
  std::int64_t group_size = 0;
  std::vector<NamePattern> targets;
};

struct CompressedTensorsConfig {
  std::vector<ConfigGroupArguments> groups;
  std::vector<NamePattern> ignore;
};

// The block of config.json (quant_method compressed-tensors). Throws (nlohmann type errors,
// BadInput for unparsable patterns) when it is malformed.
CompressedTensorsConfig parse_compressed_tensors_config(const nlohmann::json& block);

// The group compressed-tensors and transformers give `module` (§2.5: ignore first, then exact
// names, regexes, the class name "Linear"; ties go to the first group), nullopt when none. Our
// writer makes vLLM's resolution agree with this one (quantization_config.cpp).
const ConfigGroupArguments* covering_group(const CompressedTensorsConfig& config,
                                           const std::string& module);

}  // namespace qs
