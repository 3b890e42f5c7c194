#pragma once
// Calibration statistics for routed experts that the router gave few or no tokens. Under routed
// calibration an expert's XᵀX sums only the tokens routed to it; with n_e tokens and input width
// K it has rank ≤ n_e, and with none the expert has no statistics at all (GPTQ then falls back
// to round-to-nearest). This decorator fills such an expert's gate_proj and up_proj up to
// `blend_tokens` effective tokens with the layer's pooled gate/up input statistics (the sum
// over all experts, qs/ckpt/plan/calibration_statistics.h):
//
//     H_e' = H_e + max(0, T − n_e) / n_pool · H_pool        (T = blend_tokens)
//
// so H_e' carries n_e of the expert's own tokens and T − n_e tokens' worth of the layer's
// average expert input — the best guess of what the expert would see on more data. Only where
// that guess is sound: the pool must hold at least K token rows (else it is rank-deficient
// too), and down_proj is never blended (its inputs are the expert's own activations; another
// expert's say nothing about them — measured in docs/algorithms/gptq.md). Experts with at least
// T tokens, and entries shared under all-experts calibration (every expert saw every token),
// pass through unchanged, so those still share one factorization per layer.
// It wraps any provider (the statistics file or the pipelined job's in-memory layer).
// A provider without pooled entries (statistics files written before them) passes through.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/plan/calibration_statistics.h"

namespace qs {

class BlendedStatistics final : public CalibrationStatistics {
 public:
  BlendedStatistics(const CalibrationStatistics& inner, std::uint64_t blend_tokens);

  // A blended expert's entry is the inner one with `tokens` = T (the effective count) and no
  // `shared_with`; others are the inner entry.
  const CalibrationEntry* find(const std::string& module) const override;
  std::vector<double> second_moments(const std::string& module) const override;

  // How `module` was blended: its own tokens, the pooled tokens borrowed from and the weight
  // given to the pooled matrix; nullopt when it was not.
  struct Blend {
    std::uint64_t own_tokens = 0;
    std::uint64_t pooled_tokens = 0;
    double pooled_weight = 0.0;  // (T − n_e) / n_pool
  };
  std::optional<Blend> blend_of(const std::string& module) const;

 private:
  struct Blended {
    CalibrationEntry entry;
    std::string pooled;  // the pooled entry's module
    Blend blend;
  };
  // The blend for `module`, computed once (thread-safe; entries stay put once made).
  const Blended* blended(const std::string& module) const;

  const CalibrationStatistics& inner_;
  std::uint64_t blend_tokens_;
  mutable std::mutex mutex_;
  mutable std::map<std::string, std::unique_ptr<Blended>> blended_;  // nullptr: not blended
};

}  // namespace qs
