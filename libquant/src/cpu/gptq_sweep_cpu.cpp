// The GPTQ column sweep on the CPU (docs/algorithms/gptq.md, "Column sweep"). Rows are
// independent given U, so each block of 128 columns is swept row-parallel (oneTBB) inside the
// block, and the lazy update of the columns after it is one SGEMM in fixed tiles
// (deterministic_blas.h): W[:, i2:] −= E · U[i1:i2, i2:].

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <vector>

#include "qs/quant/deterministic_blas.h"
#include "qs/quant/gptq.h"
#include "../gptq_row_objective.h"

namespace qs::gptq::detail {

void sweep_cpu(std::span<const float> weight, const intq::IntScheme& scheme,
               const PreparedHessian& hessian, intq::IntQuantized& out,
               std::span<double> row_objective) {
  const int block_size = kLazyBlock;
  const std::uint64_t rows = out.rows, cols = out.cols;
  const std::uint64_t width = scheme.group_width(cols);
  const std::uint64_t groups = out.groups();
  const auto& order = hessian.order;
  const float* u = hessian.u.data();
  // The weight in processing order, updated in place as errors are fed forward.
  std::vector<float> w(rows * cols);
  for (std::uint64_t r = 0; r < rows; ++r)
    for (std::uint64_t j = 0; j < cols; ++j) w[r * cols + j] = weight[r * cols + order[j]];
  std::vector<float> errors(rows * static_cast<std::uint64_t>(block_size));
  for (std::uint64_t i1 = 0; i1 < cols; i1 += block_size) {
    const std::uint64_t i2 = std::min<std::uint64_t>(i1 + block_size, cols);
    const std::uint64_t count = i2 - i1;
    tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, rows, 8), [&](const auto& range) {
      for (std::uint64_t r = range.begin(); r != range.end(); ++r) {
        float* row = w.data() + r * cols;
        float* row_errors = errors.data() + r * count;
        for (std::uint64_t j = i1; j < i2; ++j) {
          const std::uint32_t column = order[j];
          const intq::GroupParams params{out.scales[r * groups + column / width],
                                         out.zeros[r * groups + column / width]};
          const int code = intq::decodable_code(
              intq::quantize_value(row[j], params, scheme.format, DType::F32), params,
              out.scale_dtype);
          out.codes[r * cols + column] = static_cast<std::int8_t>(code);
          const float decoded = intq::dequantize_value(code, params, out.scale_dtype);
          const float error = (row[j] - decoded) / u[j * cols + j];
          const float* u_row = u + j * cols;
          for (std::uint64_t t = j + 1; t < i2; ++t) row[t] -= error * u_row[t];
          row_errors[j - i1] = error;
        }
        if (!row_objective.empty()) row_objective[r] += sum_of_squares(row_errors, count);
      }
    });
    if (i2 < cols)
      blas::sgemm(blas::Op::None, blas::Op::None, rows, cols - i2, count, -1.0f, errors.data(),
                  count, u + i1 * cols + i2, cols, 1.0f, w.data() + i2, cols);
  }
}

}  // namespace qs::gptq::detail
