#pragma once
// The configs engines read to learn how a checkpoint is quantized:
//  * modelopt: hf_quant_config.json and the flat `quantization_config` block of config.json,
//    both always written, with the same content (docs/formats/modelopt-nvfp4.md,
//    "quantization_config and hf_quant_config.json");
//  * compressed-tensors: `quantization_config` in config.json (docs/formats/compressed-tensors.md,
//    "quantization_config").
// Exclusion / ignore lists use exact module names (and, for layers whose routed experts all
// stay unquantized, one entry per layer), never prefixes that engines' substring rules could
// stretch (docs/formats/modelopt-nvfp4.md, "exclude_modules matching"). The compressed-tensors
// config is checked against vLLM's own target resolution (name_pattern.h) before it is returned.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/formats/vq_declaration.h"
#include "qs/ckpt/formats/weight_scheme.h"

namespace qs {

inline constexpr std::string_view kQuantsmithVersion = "0.1.0";
inline constexpr std::string_view kHfQuantConfigFileName = "hf_quant_config.json";

// Linears quantized to one integer scheme (one compressed-tensors config group).
struct IntegerModules {
  IntegerOptions options;
  bool gptq = false;
  std::vector<std::string> modules;  // checkpoint module paths
};

struct QuantizedModel {
  // Module paths (checkpoint names, unfused) of the NVFP4 Linears.
  std::vector<std::string> nvfp4_modules;
  // Integer Linears, one entry per distinct scheme, in first-seen order.
  std::vector<IntegerModules> integer_groups;
  // Module paths of the FP8 block-scaled Linears (DeepSeek layout, fp8_block_format.h).
  std::vector<std::string> fp8_block_modules;
  // Vector-quantized Linears (docs/formats/vq.md): module, tier, codebook tensor.
  std::vector<VqModuleEntry> vq_modules;
  // Module paths of every other Linear (kept in a float dtype), MTP layers included.
  std::vector<std::string> unquantized_linears;
  bool activations_quantized = false;              // W4A4: input scales are written
  std::optional<std::string> kv_cache_quant_algo;  // modelopt "FP8", or none
};

// {"producer": ..., "quantization": {quant_algo, kv_cache_quant_algo, group_size,
// exclude_modules}}: the nested form, every key present (vLLM requires them).
nlohmann::json modelopt_hf_quant_config(const QuantizedModel& model);
// The flat form for config.json (quant_method "modelopt").
nlohmann::json modelopt_config_block(const QuantizedModel& model);
// The compressed-tensors block for config.json (quant_method "compressed-tensors"): one config
// group per scheme with its own `format` (nvfp4-pack-quantized, pack-quantized), top-level
// `format` the single one or "mixed-precision", and an explicit ignore list. The largest group
// targets the class "Linear"; the others target anchored regexes over their modules' names,
// both as checkpoints name them and as vLLM fuses them. Throws Internal "config.vllm_mismatch"
// if vLLM would resolve any module differently from what the checkpoint holds (unmatched,
// ignored, or matched to another group's scheme).
// With VQ modules, those are in `ignore` (compressed-tensors does not decode them; with no
// scalar groups the block has none, format "dense") and the block gains `vq` (tiers, each
// module's tier and codebook tensor) and `extra_config` (per-module {"bits", "format": "vq",
// "d"} markers as in the published GLM-5.2 VQ release): docs/formats/vq.md.
nlohmann::json compressed_tensors_config_block(const QuantizedModel& model);

// The exclusion list both formats start from: exact names of unquantized Linears, with a
// layer's routed experts collapsed when none of them is quantized. `expert_entries` makes the
// collapsed entries for a layer's experts prefix ("model.layers.3.mlp.experts").
std::vector<std::string> unquantized_module_entries(
    const QuantizedModel& model, std::vector<std::string> (*expert_entries)(const std::string&));

// config.json with `quantization_config` replaced (added or overwritten) by `block`,
// serialised the way transformers writes it (indent 2).
std::string config_with_quantization(const nlohmann::json& config, const nlohmann::json& block);

// Linears quantized in any scheme.
std::size_t quantized_linear_count(const QuantizedModel& model);

// The small files a job writes beside its shards (name → content): the source's auxiliary
// files (tokenizer, generation config, ...), config.json with the quantization block of
// `format` (for modelopt also hf_quant_config.json), or, when nothing is quantized (or
// `format` is nullopt), config.json without any quantization_config the source had.
std::vector<std::pair<std::string, std::string>> output_config_files(
    const Checkpoint& source, const QuantizedModel& model, std::optional<OutputFormat> format);

}  // namespace qs
