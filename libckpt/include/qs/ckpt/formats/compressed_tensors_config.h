#pragma once
// A checkpoint's quantization config read back: a compressed-tensors quantization_config
// (docs/formats/compressed-tensors.md, "quantization_config") — each config group's weight
// arguments and targets, the ignore list, and how compressed-tensors and vLLM resolve a module
// against them — and a modelopt exclude_modules list (docs/formats/modelopt-nvfp4.md,
// "exclude_modules matching"). `validate` checks tensors and coverage against it, `inspect`
// tabulates modules per group, `splice` reads the schemes of its sources.

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/model/name_pattern.h"
#include "qs/ckpt/formats/quantization_detection.h"

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
  bool activations_quantized = false;  // input_activations present (W4A4, W8A8, ...)
  std::vector<NamePattern> targets;
};

struct CompressedTensorsConfig {
  std::vector<ConfigGroupArguments> groups;
  std::vector<NamePattern> ignore;
};

// The block of config.json (quant_method compressed-tensors). Throws (nlohmann type errors,
// BadInput for unparsable patterns) when it is malformed. Groups come in the order the parsed
// JSON object iterates them (nlohmann::json sorts keys: group_0 … group_9 keep config order,
// a group_10 would sort before group_2).
CompressedTensorsConfig parse_compressed_tensors_config(const nlohmann::json& block);

// How compressed-tensors and transformers resolve a module (docs/formats/compressed-tensors.md,
// "Target and ignore matching": ignore first — names, regexes and the class name "Linear" —,
// then exact names, regexes, the class name "Linear"; ties go to the first group).
enum class CtDecision : std::uint8_t { Targeted, Ignored, Unmatched };

struct CtResolution {
  CtDecision decision = CtDecision::Unmatched;
  std::size_t group = 0;  // index into config.groups (Targeted only)
};

CtResolution resolve_compressed_tensors(const CompressedTensorsConfig& config,
                                        const std::string& module);

// The group resolve_compressed_tensors targets, nullptr when ignored or unmatched. Our writer
// makes vLLM's resolution agree with this one (quantization_config.cpp).
const ConfigGroupArguments* covering_group(const CompressedTensorsConfig& config,
                                           const std::string& module);

// The first name or regex target (not a class name) of any group that matches `name`, as
// "group_1 're:^...$'"; nullopt when none does. For reporting modules both targeted and ignored.
std::optional<std::string> first_name_target(const CompressedTensorsConfig& config,
                                             const std::string& name);

// The groups' targets as vLLM flattens them into one dict (first position kept, a target
// repeated in a later group takes that group's scheme), with the group each index resolves
// to.
struct VllmTargets {
  VllmTargetMatcher matcher;
  std::vector<std::size_t> group_of_target;  // target index → index into config.groups
};

// Throws like NamePattern::parse (the patterns already parsed once, so it does not).
VllmTargets vllm_targets(const CompressedTensorsConfig& config);

// What a group quantizes weights to, in words: "int8 sym group 128", "int4 asym channel",
// "nvfp4 (float 4-bit, group 16)", "float8 tensor"; " + activations" when it has
// input_activations; "no weights" for a group without weight arguments.
std::string scheme_description(const ConfigGroupArguments& group);

// Whether the group holds NVFP4 weights (float, 4 bits, group 16).
bool is_nvfp4_group(const ConfigGroupArguments& group);

// ---- modelopt ----

// A modelopt checkpoint's exclude_modules lists as found: config.json's modelopt block
// (exclude_modules, else ignore) and hf_quant_config.json's quantization.exclude_modules, a
// list identical to one already read counted once. `declared`: either file says modelopt.
// `problems` (file, message): a list that is not a list of names, an unreadable
// hf_quant_config.json; what can be read is still returned.
struct ModeloptExclusionList {
  std::string file;
  std::vector<std::string> entries;
};
struct ModeloptExclusions {
  bool declared = false;
  std::vector<ModeloptExclusionList> lists;
  std::vector<std::pair<std::string, std::string>> problems;
};
ModeloptExclusions read_modelopt_exclusions(const Checkpoint& checkpoint);

// The entry of a modelopt exclude_modules list that excludes `module`, nullopt when none does.
// An entry excludes a module when it matches the name as an fnmatch glob (TensorRT-LLM and
// vLLM's last rule) or, vLLM's legacy rule, is a substring of it: "excluded" is what any
// engine would exclude, so an NVFP4 module stretched into by a short entry is caught.
std::optional<std::string> modelopt_excluding_entry(const std::vector<std::string>& entries,
                                                    const std::string& module);

// ---- which modules a config must account for ----

// A Linear by its role (tensor_name.h is_linear) with a 2-D weight, or any module stored in a
// quantized layout: the modules a quantization config must target or ignore. Embeddings, norms
// and tensors outside the name grammar are not.
bool is_config_accountable(const ModuleParameters& parameters);

}  // namespace qs
