#pragma once
// What calibrated quantizers (GPTQ, Hessian-aware NVFP4 scales) read: per Linear, the sum of
// its input second moments XᵀX and how many token rows went into it. Two sources implement it:
// the statistics file of the two-step flow (calibration_store.h) and the layer-pipelined
// quantize job, which holds one decoder layer's statistics in memory at a time. A quantizer
// asks only for the modules of its own plan item; in the pipelined job the call waits until
// that module's layer has been calibrated.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qs {

struct CalibrationEntry {
  std::string module;             // checkpoint module path (…experts.3.gate_proj)
  std::uint64_t in_features = 0;  // K
  std::uint64_t tokens = 0;       // rows summed into XᵀX
  std::string shared_with;        // another entry holding the matrix, or empty
  std::uint64_t offset = 0;       // statistics file: its zstd frame (when it holds one)
  std::uint64_t compressed_bytes = 0;
  double input_amax = 0.0;  // max |x| over the inputs (NVFP4 activation scales)
};

// A MoE layer's expert-wide entries; `experts_prefix` is model.layers.L.mlp.experts.
//  * all-experts calibration: the one input every routed expert's gate_proj and up_proj saw
//    (all tokens); the experts' gate/up entries point at it (`shared_with`);
//  * routed calibration: the sums over the experts of their gate/up inputs' and down inputs'
//    XᵀX (tokens: the sum of the experts' counts). Experts with few tokens borrow from them
//    (qs/quant/blended_statistics.h).
inline std::string shared_gate_up_input(const std::string& experts_prefix) {
  return experts_prefix + ".gate_up_input";
}
inline std::string pooled_gate_up_input(const std::string& experts_prefix) {
  return experts_prefix + ".pooled_gate_up_input";
}
inline std::string pooled_down_input(const std::string& experts_prefix) {
  return experts_prefix + ".pooled_down_input";
}

class CalibrationStatistics {
 public:
  virtual ~CalibrationStatistics() = default;
  // The module's entry, or nullptr when it has none (a routed expert no token reached).
  virtual const CalibrationEntry* find(const std::string& module) const = 0;
  // XᵀX of `module` (K·K f64, full symmetric, row-major), through `shared_with`. Throws BadInput
  // "calibration.missing_module" naming the module when it has no entry.
  virtual std::vector<double> second_moments(const std::string& module) const = 0;
  // At plan time, without waiting: the in_features of the statistics `module` has or will
  // have, nullopt when it will have none. The statistics file answers from its entries; the
  // pipelined job from the model (every Linear its forward feeds), before any layer has run.
  virtual std::optional<std::uint64_t> promised_in_features(const std::string& module) const {
    const CalibrationEntry* entry = find(module);
    if (!entry) return std::nullopt;
    return entry->in_features;
  }
};

}  // namespace qs
