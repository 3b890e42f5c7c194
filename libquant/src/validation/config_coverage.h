#pragma once
// The "config" check of `validate` for quantized checkpoints: does the quantization config
// account for every Linear exactly once, with the scheme its tensors hold, as both
// compressed-tensors / transformers and vLLM read it (docs/formats/compressed-tensors.md, "Target
// and ignore matching"; docs/formats/modelopt-nvfp4.md, "exclude_modules matching")? The findings
// are listed in qs/quant/nvfp4_validation.h. Internal to libquant: validate_nvfp4() calls it after
// the pack-quantized checks, which own how a pack-quantized module's own config group (as
// compressed-tensors resolves it) fits its tensors; this check owns everything else about coverage.

#include <map>
#include <string>

#include "pack_quantized_checks.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/validate/validation.h"

namespace qs::validation {

// Reads config.json's quantization_config (compressed-tensors or modelopt) and
// hf_quant_config.json, from headers and config alone. Does nothing for a checkpoint without
// either. `int_modules`: the modules check_pack_quantized found.
void check_config_coverage(const Checkpoint& checkpoint,
                           const std::map<std::string, PackQuantizedModule>& int_modules,
                           ValidationReport& report);

}  // namespace qs::validation
