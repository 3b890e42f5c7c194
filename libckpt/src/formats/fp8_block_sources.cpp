#include "qs/ckpt/formats/fp8_block_sources.h"

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/fp8_block_format.h"
#include "qs/ckpt/formats/quantization_detection.h"

namespace qs {

std::map<std::string, QuantizedWeight> fp8_block_modules(const Checkpoint& checkpoint) {
  std::map<std::string, QuantizedWeight> found;
  for (const auto& [module, parameters] : modules_of(checkpoint)) {
    const auto weight = parameters.find("weight");
    if (weight == parameters.end() || weight->second.info->dtype != DType::F8_E4M3) continue;
    // F8_E4M3 with a per-tensor or per-channel weight_scale is another format (compressed-
    // tensors FP8), which the layout detection names and these jobs do not read.
    if (parameters.contains("weight_scale")) continue;
    if (!parameters.contains(kFp8ScaleParameter))
      throw_bad_input("fp8.missing_scale",
                      "FP8 (F8_E4M3) weight without its weight_scale_inv: the block scales "
                      "that decode it are not in the checkpoint",
                      weight->second.shard->path().string(), weight->second.info->name);
    found.emplace(module, checked_quantized_weight(module, parameters, 0, "fp8.invalid_scale"));
  }
  if (!found.empty())
    require_supported_fp8_config(checkpoint.config(),
                                 (checkpoint.directory() / "config.json").string());
  return found;
}

}  // namespace qs
