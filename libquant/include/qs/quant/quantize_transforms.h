#pragma once
// The quantizing transforms the quantize planner asks for (qs/ckpt/plan/quantize_plan.h), built on
// the numerics of this library.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "qs/ckpt/plan/plan.h"
#include "qs/ckpt/plan/quantize_plan.h"

namespace qs {

// What to do with NaN / ±Inf in a weight that is being quantized.
enum class NanPolicy : std::uint8_t {
  Error,  // refuse, naming the tensor and the count (default: a corrupt source is a bug)
  Zero,   // quantize as if they were 0, and report the count
};
std::optional<NanPolicy> parse_nan_policy(std::string_view text);

enum class ComputeDevice : std::uint8_t { Auto, Cpu, Cuda };

// Prepared GPTQ Hessians and NVFP4 block Hessians shared by every transform of one job
// (src/transforms/hessian_cache.h): matrices calibrated on the same inputs (all experts'
// gate/up under all-experts calibration) reuse one factorization.
class HessianCache;

// Where calibrated transforms spend their time, summed over a job's transforms (thread-safe):
// the layer-pipelined quantize job reports it per stage.
struct QuantizeStageTimes {
  // GPTQ (integer and NVFP4): preparing Hessians (Cholesky, inverse), then the column sweep
  // with its objective.
  std::atomic<std::uint64_t> factorization_ns{0};
  std::atomic<std::uint64_t> sweep_ns{0};

  // Adds the time since `start` to `counter`.
  static void add_since(std::atomic<std::uint64_t>& counter,
                        std::chrono::steady_clock::time_point start) {
    counter += static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                              std::chrono::steady_clock::now() - start)
                                              .count());
  }
};

struct QuantizerSettings {
  NanPolicy nan_policy = NanPolicy::Error;
  ComputeDevice device = ComputeDevice::Auto;
  std::shared_ptr<HessianCache> hessians;  // made on first use when empty
  // Quantized weights below this SNR fail the job naming them ("quantize.signal_lost").
  double min_snr_db = kDefaultMinSnrDb;
  // When set (outliving the job's transforms), calibrated transforms add their stage times.
  QuantizeStageTimes* stage_times = nullptr;
};

// Throws BadInput "plan.unknown_scale_method" for a method the format does not have, and
// "plan.unknown_observer" for an integer observer we lack, before any data is read.
std::shared_ptr<const Transform> make_quantize_transform(const QuantizeRequest& request,
                                                         QuantizerSettings& settings);

}  // namespace qs
