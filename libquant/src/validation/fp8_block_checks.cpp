#include "fp8_block_checks.h"

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/fp8_block_format.h"
#include "qs/ckpt/formats/quantization_detection.h"

namespace qs::validation {

std::map<std::string, QuantizedWeight> check_fp8_block(const Checkpoint& checkpoint,
                                                       ValidationReport& report) {
  constexpr const char* kCheck = "fp8-block";
  std::map<std::string, QuantizedWeight> usable;
  bool any = false;
  for (const auto& [module, parameters] : modules_of(checkpoint)) {
    const auto weight = parameters.find("weight");
    if (weight == parameters.end() || weight->second.info->dtype != DType::F8_E4M3 ||
        parameters.contains("weight_scale"))
      continue;
    any = true;
    if (!parameters.contains(kFp8ScaleParameter)) {
      report.add(Severity::Problem, kCheck, "fp8.missing_scale",
                 "FP8 (F8_E4M3) weight without its weight_scale_inv: nothing decodes it",
                 weight->second.shard->path().string(), weight->second.info->name);
      continue;
    }
    try {
      usable.emplace(module, checked_quantized_weight(module, parameters, 0, "fp8.invalid_scale"));
    } catch (const Error& error) {
      report.add(Severity::Problem, kCheck, error.kind(), error.detail(), error.file(),
                 error.tensor());
    }
  }
  if (any) report.checks_run.push_back(kCheck);
  return usable;
}

}  // namespace qs::validation
