#include "qs/quant/gptq.h"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "qs/ckpt/core/error.h"
#include "qs/quant/deterministic_blas.h"

// LAPACK through OpenBLAS, which exports the Fortran symbols (Debian ships no lapack.h with it).
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void dtrtri_(const char* uplo, const char* diag, const int* n, double* a, const int* lda,
             int* info);
}

namespace qs::gptq {
namespace {

// Damping fractions tried in turn: the requested one, then 3×, 10×, 30×, ... up to 1.0.
std::vector<double> damping_ladder(double first) {
  std::vector<double> ladder{first};
  double next = first > 0.0 ? first : 0.01;
  for (int step = 0; next < 1.0; ++step) {
    next *= step % 2 == 0 ? 3.0 : 10.0 / 3.0;
    ladder.push_back(std::min(next, 1.0));
  }
  return ladder;
}

}  // namespace

PreparedHessian prepare_hessian(std::span<const double> second_moments, std::uint64_t columns,
                                std::uint64_t tokens, const Settings& settings, Backend backend) {
  if (second_moments.size() != columns * columns)
    throw Error(ErrorClass::Internal, "gptq.shape", "Hessian size does not match the columns");
  PreparedHessian prepared;
  prepared.columns = columns;
  prepared.tokens = tokens;
  prepared.hessian.resize(columns * columns);
  for (std::uint64_t i = 0; i < second_moments.size(); ++i) {
    if (!std::isfinite(second_moments[i]))
      throw_bad_input("calibration.non_finite",
                      "the calibration statistics contain NaN or Inf; recalibrate");
    prepared.hessian[i] = static_cast<float>(second_moments[i]);
  }
  prepared.order.resize(columns);
  std::iota(prepared.order.begin(), prepared.order.end(), 0u);
  prepared.dead.assign(columns, 0);
  if (tokens == 0 || tokens < settings.min_tokens) {
    prepared.fallback = fmt::format("calibrated on {} token rows (minimum {})", tokens,
                                    std::max<std::uint64_t>(settings.min_tokens, 1));
    return prepared;
  }
  std::vector<double> h(second_moments.begin(), second_moments.end());
  double diagonal_sum = 0.0;
  for (std::uint64_t i = 0; i < columns; ++i) {
    if (h[i * columns + i] == 0.0) {  // an input that is always 0: its weights do not matter
      prepared.dead[i] = 1;
      h[i * columns + i] = 1.0;
    }
    diagonal_sum += h[i * columns + i];
  }
  const std::uint64_t run = std::max<std::uint32_t>(settings.order_block, 1);
  if (columns % run != 0)
    throw Error(ErrorClass::Internal, "gptq.shape",
                "columns are not a multiple of the order block");
  if (settings.act_order && run == 1) {
    std::stable_sort(prepared.order.begin(), prepared.order.end(), [&](auto a, auto b) {
      return h[a * columns + a] > h[b * columns + b];
    });
  } else if (settings.act_order) {
    std::vector<double> energy(columns / run, 0.0);
    for (std::uint64_t i = 0; i < columns; ++i) energy[i / run] += h[i * columns + i];
    std::vector<std::uint32_t> runs(columns / run);
    std::iota(runs.begin(), runs.end(), 0u);
    std::stable_sort(runs.begin(), runs.end(),
                     [&](auto a, auto b) { return energy[a] > energy[b]; });
    for (std::uint64_t r = 0; r < runs.size(); ++r)
      for (std::uint64_t i = 0; i < run; ++i)
        prepared.order[r * run + i] = static_cast<std::uint32_t>(runs[r] * run + i);
  }
  std::vector<double> permuted(columns * columns);
  for (std::uint64_t i = 0; i < columns; ++i)
    for (std::uint64_t j = 0; j < columns; ++j)
      permuted[i * columns + j] = h[prepared.order[i] * columns + prepared.order[j]];
  const double mean_diagonal = diagonal_sum / static_cast<double>(columns);
  for (double fraction : damping_ladder(settings.damp)) {
    std::vector<double> reversed(columns * columns);
    for (std::uint64_t i = 0; i < columns; ++i)
      for (std::uint64_t j = 0; j < columns; ++j)
        reversed[i * columns + j] = permuted[(columns - 1 - i) * columns + (columns - 1 - j)];
    for (std::uint64_t i = 0; i < columns; ++i) reversed[i * columns + i] += fraction * mean_diagonal;
    const bool factored =
        backend == Backend::Cuda
            ? detail::inverse_cholesky_upper_cuda(reversed, columns, prepared.u)
            : detail::inverse_cholesky_upper_cpu(reversed, columns, prepared.u);
    if (factored) {
      prepared.damp_used = fraction;
      prepared.damping = fraction * mean_diagonal;
      return prepared;
    }
  }
  prepared.fallback = "the Hessian is not positive definite even with damping 1.0";
  return prepared;
}

namespace detail {

// J·A·J = M·Mᵀ (M lower) gives A⁻¹ = (J·M⁻¹·J)ᵀ·(J·M⁻¹·J). Row-major lower is column-major
// upper for LAPACK.
bool inverse_cholesky_upper_cpu(std::vector<double>& reversed, std::uint64_t n,
                                std::vector<float>& u) {
  // OpenBLAS's threaded potrf and trtri split the work by thread count; single-threaded they
  // give the same U everywhere.
  blas::use_single_threaded_blas();
  const int size = static_cast<int>(n);
  int info = 0;
  dpotrf_("U", &size, reversed.data(), &size, &info);  // row-major lower factor M
  if (info != 0) return false;
  dtrtri_("U", "N", &size, reversed.data(), &size, &info);  // M⁻¹, still lower (row-major)
  if (info != 0) return false;
  u.assign(n * n, 0.0f);
  for (std::uint64_t i = 0; i < n; ++i)
    for (std::uint64_t j = i; j < n; ++j)
      u[i * n + j] = static_cast<float>(reversed[(n - 1 - i) * n + (n - 1 - j)]);
  return true;
}

void static_grid(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                 DType scale_dtype, const intq::IntScheme& scheme, intq::IntQuantized& out) {
  const std::uint64_t width = scheme.group_width(cols);
  const std::uint64_t groups = cols / width;
  out = intq::IntQuantized(rows, cols, groups, scale_dtype);
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, rows, 16), [&](const auto& range) {
    for (std::uint64_t r = range.begin(); r != range.end(); ++r)
      for (std::uint64_t g = 0; g < groups; ++g) {
        const float* values = weight.data() + r * cols + g * width;
        const auto params = intq::observe_group(values, static_cast<int>(width), scheme.format,
                                                scale_dtype, scheme.observer);
        out.scales[r * groups + g] = params.scale;
        out.zeros[r * groups + g] = static_cast<std::int8_t>(params.zero);
        for (std::uint64_t i = 0; i < width; ++i)
          out.codes[r * cols + g * width + i] = static_cast<std::int8_t>(
              intq::quantize_value(values[i], params, scheme.format, scale_dtype));
      }
  });
}

Objective objective(std::span<const float> weight, const intq::IntQuantized& quantized,
                    const PreparedHessian& hessian) {
  std::vector<float> decoded(quantized.rows * quantized.cols);
  intq::dequantize(quantized, decoded);
  return objective_of_decoded(weight, decoded, quantized.rows, quantized.cols, hessian);
}

Objective objective_of_decoded(std::span<const float> weight, std::span<const float> decoded,
                               std::uint64_t rows, std::uint64_t cols,
                               const PreparedHessian& hessian) {
  Objective result;
  result.reference = quadratic_form(weight, rows, cols, hessian);
  std::vector<float> difference(weight.begin(), weight.end());
  for (std::uint64_t i = 0; i < difference.size(); ++i) difference[i] -= decoded[i];
  result.error = quadratic_form(difference, rows, cols, hessian);
  return result;
}

double quadratic_form(std::span<const float> matrix, std::uint64_t rows, std::uint64_t cols,
                      const PreparedHessian& hessian) {
  std::vector<float> product(rows * cols);
  blas::sgemm(blas::Op::None, blas::Op::None, rows, cols, cols, 1.0f, matrix.data(), cols,
              hessian.hessian.data(), cols, 0.0f, product.data(), cols);
  double sum = 0.0;
  for (std::uint64_t i = 0; i < matrix.size(); ++i)
    sum += static_cast<double>(matrix[i]) * product[i];
  return sum;
}

std::vector<double> quadratic_forms(std::span<const std::span<const float>> matrices,
                                    std::uint64_t rows, std::uint64_t cols,
                                    const PreparedHessian& hessian, bool cuda) {
  if (cuda) return quadratic_forms_cuda(matrices, rows, cols, hessian);
  std::vector<double> results;
  for (const auto& matrix : matrices) results.push_back(quadratic_form(matrix, rows, cols, hessian));
  return results;
}

double swept_objective(std::span<const double> row_objective, std::span<const float> live,
                       std::span<const float> decoded, std::uint64_t cols,
                       const PreparedHessian& hessian) {
  double damped = 0.0;
  for (double row : row_objective) damped += row;
  double all = 0.0, dead = 0.0;
  for (std::uint64_t i = 0; i < live.size(); ++i) {
    const double difference = static_cast<double>(live[i]) - decoded[i];
    all += difference * difference;
    if (hessian.dead[i % cols]) dead += difference * difference;
  }
  // H_λ = H + λ·I + (1 on dead columns' diagonal): ΔW·H·ΔWᵀ = Σ e² − λ‖ΔW‖² − ‖ΔW_dead‖².
  return damped - hessian.damping * all - dead;
}

}  // namespace detail

Result quantize(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                DType scale_dtype, const intq::IntScheme& scheme, const PreparedHessian& hessian,
                Backend backend, intq::IntQuantized& out, bool rtn_baseline) {
  if (weight.size() != rows * cols || hessian.columns != cols)
    throw Error(ErrorClass::Internal, "gptq.shape", "weight and Hessian do not match");
  if (cols % scheme.group_width(cols) != 0)
    throw_bad_input("int.group_size", fmt::format("in-features {} are not a multiple of the group "
                                                  "size {}",
                                                  cols, scheme.group_size));
  std::vector<float> live(weight.begin(), weight.end());
  for (std::uint64_t c = 0; c < cols; ++c)
    if (hessian.dead[c])
      for (std::uint64_t r = 0; r < rows; ++r) live[r * cols + c] = 0.0f;
  detail::static_grid(live, rows, cols, scale_dtype, scheme, out);
  Result result;
  result.fallback = hessian.fallback;
  // tr(W·H·Wᵀ) once (both objectives are relative to it), with round-to-nearest's when asked
  // for or written; the swept codes' objective comes from the sweep.
  std::vector<float> decoded(rows * cols);
  std::vector<std::span<const float>> forms{weight};
  result.rtn_computed = rtn_baseline || !hessian.fallback.empty();
  if (result.rtn_computed) {
    intq::dequantize(out, decoded);
    for (std::uint64_t i = 0; i < decoded.size(); ++i) decoded[i] = weight[i] - decoded[i];
    forms.push_back(decoded);
  }
  const auto values =
      detail::quadratic_forms(forms, rows, cols, hessian, backend == Backend::Cuda);
  const double reference = values[0];
  auto relative = [&](double error) { return reference > 0.0 ? error / reference : 0.0; };
  if (result.rtn_computed) result.rtn_relative_loss = relative(values[1]);
  result.relative_loss = result.rtn_relative_loss;
  if (hessian.fallback.empty()) {
    std::vector<double> row_objective(rows, 0.0);
    if (backend == Backend::Cuda)
      detail::sweep_cuda(live, scheme, hessian, out, row_objective);
    else
      detail::sweep_cpu(live, scheme, hessian, out, row_objective);
    intq::dequantize(out, decoded);
    result.relative_loss =
        relative(detail::swept_objective(row_objective, live, decoded, cols, hessian));
  }
  if (!hessian.fallback.empty()) intq::dequantize(out, decoded);
  for (std::uint64_t i = 0; i < decoded.size(); ++i) {
    const double difference = static_cast<double>(weight[i]) - decoded[i];
    result.energy.signal += static_cast<double>(weight[i]) * weight[i];
    result.energy.error += difference * difference;
  }
  return result;
}

}  // namespace qs::gptq
