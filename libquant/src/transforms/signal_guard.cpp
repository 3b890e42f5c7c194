#include "signal_guard.h"

#include <fmt/format.h>

#include <cmath>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

class SignalFloorTransform final : public Transform {
 public:
  SignalFloorTransform(std::shared_ptr<const Transform> inner, double min_snr_db)
      : inner_(std::move(inner)), min_snr_db_(min_snr_db) {}

  std::string describe() const override { return inner_->describe(); }
  bool is_byte_copy() const override { return inner_->is_byte_copy(); }
  std::uint64_t extra_cost(const PlanItem& item) const override {
    return inner_->extra_cost(item);
  }

  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    auto quality = inner_->run(sources, outputs);
    for (const auto& q : quality) {
      // An all-zero weight has nothing to lose; energies that overflowed (weights near the
      // largest floats) cannot be judged here (validate --ref measures those without overflow).
      if (!(q.signal_energy > 0.0) || !std::isfinite(q.signal_energy) ||
          !std::isfinite(q.error_energy))
        continue;
      if (q.snr_db() >= min_snr_db_) continue;
      throw_bad_input(
          "quantize.signal_lost",
          fmt::format("{} keeps {:.2f} dB SNR of the weight (the recipe's min_snr_db is {}): the "
                      "scheme cannot represent it (an outlier, here or in a fused partner sharing "
                      "its global scale, can flush every other value to 0). Keep it unquantized "
                      "with a recipe rule, or lower min_snr_db",
                      inner_->describe(), q.snr_db(), min_snr_db_),
          {}, q.tensor);
    }
    return quality;
  }

 private:
  std::shared_ptr<const Transform> inner_;
  double min_snr_db_;
};

}  // namespace

std::shared_ptr<const Transform> with_signal_floor(std::shared_ptr<const Transform> inner,
                                                   double min_snr_db) {
  return std::make_shared<SignalFloorTransform>(std::move(inner), min_snr_db);
}

}  // namespace qs
