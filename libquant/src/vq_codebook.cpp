// The uniform codebook of a scalar tier: K levels (2i − K + 1)·Δ/2, Δ the step of least mean
// squared error for a unit normal input (the scale-normalised weights have RMS 1), found by
// golden-section search on the exact error; the error of each cell is integrated in closed form
// from the normal's density φ and distribution Φ:
//   ∫_a^b (x − q)² φ(x) dx = (1 + q²)·(Φ(b) − Φ(a)) + (a − 2q)·φ(a) − (b − 2q)·φ(b).

#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <numbers>

#include "qs/ckpt/core/error.h"
#include "qs/quant/int_group.h"
#include "qs/quant/vq.h"

namespace qs::vq {
namespace {

double normal_density(double x) {
  if (std::isinf(x)) return 0.0;
  return std::exp(-0.5 * x * x) / std::sqrt(2.0 * std::numbers::pi);
}

double normal_distribution(double x) { return 0.5 * std::erfc(-x / std::numbers::sqrt2); }

// ∫ (x − q)² φ(x) dx over [a, b]; a or b may be infinite (then x·φ(x) → 0).
double cell_error(double a, double b, double q) {
  const double mass = normal_distribution(b) - normal_distribution(a);
  const double lower = std::isinf(a) ? 0.0 : (a - 2.0 * q) * normal_density(a);
  const double upper = std::isinf(b) ? 0.0 : (b - 2.0 * q) * normal_density(b);
  return (1.0 + q * q) * mass + lower - upper;
}

double level(std::uint32_t i, std::uint32_t k, double step) {
  return (2.0 * i - k + 1.0) * step / 2.0;
}

// Mean squared error of the K-level uniform quantizer with step `step` (nearest level: the
// cells' boundaries are the midpoints between levels).
double uniform_error(std::uint32_t k, double step) {
  constexpr double kInfinity = std::numeric_limits<double>::infinity();
  double error = 0.0;
  for (std::uint32_t i = 0; i < k; ++i) {
    const double a = i == 0 ? -kInfinity : (level(i - 1, k, step) + level(i, k, step)) / 2.0;
    const double b = i + 1 == k ? kInfinity : (level(i, k, step) + level(i + 1, k, step)) / 2.0;
    error += cell_error(a, b, level(i, k, step));
  }
  return error;
}

// The error is unimodal in the step; 80 golden-section rounds shrink the bracket [1e-6, 8] by
// 0.618^80 ≈ 2e-17, to the resolution of a double.
double best_uniform_step(std::uint32_t k) {
  const double ratio = (std::sqrt(5.0) - 1.0) / 2.0;
  double low = 1e-6, high = 8.0;
  for (int round = 0; round < 80; ++round) {
    const double left = high - ratio * (high - low), right = low + ratio * (high - low);
    if (uniform_error(k, left) <= uniform_error(k, right))
      high = right;
    else
      low = left;
  }
  return (low + high) / 2.0;
}

}  // namespace

Codebook uniform_codebook(const Tier& tier, DType dtype) {
  if (const std::string problem = vq_tier_problem(tier); !problem.empty())
    throw_bad_input("vq.codebook", problem);
  if (tier.d != 1)
    throw_bad_input("vq.codebook",
                    fmt::format("tier {}: a uniform codebook needs d 1, not {}", tier.name, tier.d));
  if (dtype != DType::F16 && dtype != DType::BF16)
    throw_bad_input("vq.codebook", fmt::format("codebooks are stored as F16 or BF16, not {}",
                                               dtype_name(dtype)));
  Codebook codebook{tier, dtype, std::vector<float>(tier.k)};
  const double step = best_uniform_step(tier.k);
  for (std::uint32_t i = 0; i < tier.k; ++i)
    codebook.codewords[i] = intq::round_to_dtype(static_cast<float>(level(i, tier.k, step)), dtype);
  return codebook;
}

}  // namespace qs::vq
