// ScaleRule::LeastSquares (vq_scale_refit.h). The RMS scale the sweep fixes is a guess made
// before the group's codes exist; once they do, the scales that best reproduce the row are a
// linear least-squares problem. It is solved in the layer objective's metric, and jointly for
// the row's groups: GPTQ leaves each group's weights deliberately off the source (it moved error
// into later columns), so a per-group fit on the source weights pulls the scales back towards
// those weights and undoes that compensation (docs/performance/vq-quality.md, "Investigation:
// output shrinkage and the group scale").

#include "vq_scale_refit.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "qs/ckpt/core/error.h"
#include "qs/quant/deterministic_blas.h"
#include "qs/quant/int_group.h"

namespace qs::vq::detail {
namespace {

// ĉ: each row decoded with unit scales (the stored codewords), [rows, cols].
std::vector<float> unit_decoded(std::span<const float> codewords, std::uint64_t d,
                                const VqQuantized& quantized) {
  const std::uint64_t cols = quantized.cols, vectors = cols / d;
  std::vector<float> unit(quantized.rows * cols);
  tbb::parallel_for(
      tbb::blocked_range<std::uint64_t>(0, quantized.rows, 16), [&](const auto& range) {
        for (std::uint64_t r = range.begin(); r != range.end(); ++r)
          for (std::uint64_t c = 0; c < cols; ++c)
            unit[r * cols + c] = codewords[quantized.codes[r * vectors + c / d] * d + c % d];
      });
  return unit;
}

// Without a Hessian: each group's s minimising Σ (w − s·ĉ)² is Σ w·ĉ / Σ ĉ² (f64, column order).
void refit_per_group(std::span<const float> live, const std::vector<float>& unit,
                     VqQuantized& quantized) {
  const std::uint64_t cols = quantized.cols, groups = cols / kScaleGroup;
  tbb::parallel_for(
      tbb::blocked_range<std::uint64_t>(0, quantized.rows, 16), [&](const auto& range) {
        for (std::uint64_t r = range.begin(); r != range.end(); ++r)
          for (std::uint64_t g = 0; g < groups; ++g) {
            float& scale = quantized.scales[r * groups + g];
            double cross = 0.0, energy = 0.0;
            for (std::uint64_t c = g * kScaleGroup; c < (g + 1) * kScaleGroup; ++c) {
              cross += static_cast<double>(unit[r * cols + c]) * live[r * cols + c];
              energy += static_cast<double>(unit[r * cols + c]) * unit[r * cols + c];
            }
            if (scale == 0.0f || energy <= 0.0) continue;
            const float refitted =
                intq::round_to_dtype(static_cast<float>(cross / energy), quantized.scale_dtype);
            if (intq::is_finite_value(refitted)) scale = refitted;
          }
      });
}

// x := A⁻¹·x for the symmetric n×n `a` (row-major, overwritten by its Cholesky factor). False
// when a pivot is not clearly positive (the groups are dependent in H's metric): the caller then
// keeps the row's scales.
bool cholesky_solve(std::vector<double>& a, std::vector<double>& x, std::uint64_t n) {
  for (std::uint64_t j = 0; j < n; ++j) {
    double pivot = a[j * n + j];
    for (std::uint64_t k = 0; k < j; ++k) pivot -= a[j * n + k] * a[j * n + k];
    if (!(pivot > 1e-12 * a[j * n + j])) return false;
    const double diagonal = std::sqrt(pivot);
    a[j * n + j] = diagonal;
    for (std::uint64_t i = j + 1; i < n; ++i) {
      double sum = a[i * n + j];
      for (std::uint64_t k = 0; k < j; ++k) sum -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = sum / diagonal;
    }
  }
  for (std::uint64_t i = 0; i < n; ++i) {  // L·y = x
    for (std::uint64_t k = 0; k < i; ++k) x[i] -= a[i * n + k] * x[k];
    x[i] /= a[i * n + i];
  }
  for (std::uint64_t i = n; i-- > 0;) {  // Lᵀ·s = y
    for (std::uint64_t k = i + 1; k < n; ++k) x[i] -= a[k * n + i] * x[k];
    x[i] /= a[i * n + i];
  }
  return true;
}

// The row's objective less its constant wᵀHw: sᵀ·A·s − 2·bᵀ·s (f64, fixed order).
double row_objective(const double* gram, const double* right, const std::vector<float>& scales,
                     std::uint64_t groups) {
  double sum = 0.0;
  for (std::uint64_t g = 0; g < groups; ++g) {
    double inner = 0.0;
    for (std::uint64_t k = 0; k < groups; ++k) inner += gram[g * groups + k] * scales[k];
    sum += scales[g] * (inner - 2.0 * right[g]);
  }
  return sum;
}

// With H: per row, A[g, k] = ĉ_gᵀ·H·ĉ_k and b[g] = ĉ_gᵀ·H·w (ĉ_g the row's unit-scale codes in
// group g, zero elsewhere) and s = A⁻¹·b. The products T_g = Ĉ_g·H[group g, :] are one
// fixed-tile SGEMM per group (rows·cols² multiply-adds in all, as one objective evaluation); the
// dot products with ĉ and w are summed in f64 in column order, so the result does not depend on
// the thread count.
void refit_in_metric(std::span<const float> live, const std::vector<float>& unit,
                     const gptq::PreparedHessian& hessian, VqQuantized& quantized) {
  const std::uint64_t rows = quantized.rows, cols = quantized.cols, groups = cols / kScaleGroup;
  std::vector<double> gram(rows * groups * groups), right(rows * groups);
  std::vector<float> product(rows * cols);
  for (std::uint64_t g = 0; g < groups; ++g) {
    blas::sgemm(blas::Op::None, blas::Op::None, rows, cols, kScaleGroup, 1.0f,
                unit.data() + g * kScaleGroup, cols,
                hessian.hessian.data() + g * kScaleGroup * cols, cols, 0.0f, product.data(), cols);
    tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, rows, 16), [&](const auto& range) {
      for (std::uint64_t r = range.begin(); r != range.end(); ++r) {
        const float* t = product.data() + r * cols;
        const float* c_hat = unit.data() + r * cols;
        double* a = gram.data() + r * groups * groups;
        // A is symmetric: row g's entries from k = g on, mirrored.
        for (std::uint64_t k = g; k < groups; ++k) {
          double sum = 0.0;
          for (std::uint64_t c = k * kScaleGroup; c < (k + 1) * kScaleGroup; ++c)
            sum += static_cast<double>(t[c]) * c_hat[c];
          a[g * groups + k] = sum;
          a[k * groups + g] = sum;
        }
        double sum = 0.0;
        for (std::uint64_t c = 0; c < cols; ++c)
          sum += static_cast<double>(t[c]) * live[r * cols + c];
        right[r * groups + g] = sum;
      }
    });
  }

  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, rows, 4), [&](const auto& range) {
    std::vector<std::uint64_t> free;
    std::vector<double> system, solution;
    std::vector<float> current(groups), candidate(groups);
    for (std::uint64_t r = range.begin(); r != range.end(); ++r) {
      const double* a = gram.data() + r * groups * groups;
      const double* b = right.data() + r * groups;
      float* scales = quantized.scales.data() + r * groups;
      // Zero scales (all-zero groups) stay zero; a group H does not see (ĉ_gᵀHĉ_g = 0: dead
      // columns, all-zero codewords) has nothing to fit and keeps its scale.
      free.clear();
      for (std::uint64_t g = 0; g < groups; ++g)
        if (scales[g] != 0.0f && a[g * groups + g] > 0.0) free.push_back(g);
      if (free.empty()) continue;
      const std::uint64_t n = free.size();
      system.assign(n * n, 0.0);
      solution.assign(n, 0.0);
      for (std::uint64_t i = 0; i < n; ++i) {
        solution[i] = b[free[i]];
        for (std::uint64_t g = 0, j = 0; g < groups; ++g) {
          if (j < n && free[j] == g) {
            system[i * n + j++] = a[free[i] * groups + g];
          } else {
            solution[i] -= a[free[i] * groups + g] * scales[g];  // a kept scale's share
          }
        }
      }
      if (!cholesky_solve(system, solution, n)) continue;
      std::copy(scales, scales + groups, current.begin());
      candidate = current;
      bool finite = true;
      for (std::uint64_t i = 0; i < n; ++i) {
        candidate[free[i]] =
            intq::round_to_dtype(static_cast<float>(solution[i]), quantized.scale_dtype);
        finite = finite && intq::is_finite_value(candidate[free[i]]);
      }
      // The rounded optimum is kept only when it does not raise the row's objective: rounding
      // many jointly fitted scales could, in principle, land above the sweep's.
      if (finite && row_objective(a, b, candidate, groups) <= row_objective(a, b, current, groups))
        std::copy(candidate.begin(), candidate.end(), scales);
    }
  });
}

}  // namespace

void refit_scales(std::span<const float> live, std::span<const float> codewords, std::uint32_t d,
                  const gptq::PreparedHessian* hessian, VqQuantized& quantized) {
  if (hessian && hessian->hessian.size() != quantized.cols * quantized.cols)
    throw Error(ErrorClass::Internal, "vq.shape", "the refit needs the Hessian's H (cols × cols)");
  const auto unit = unit_decoded(codewords, d, quantized);
  if (hessian)
    refit_in_metric(live, unit, *hessian, quantized);
  else
    refit_per_group(live, unit, quantized);
}

}  // namespace qs::vq::detail
