#include "qs/run/tensor_ops.h"

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <cmath>

#include "qs/ckpt/core/error.h"
#include "qs/quant/deterministic_blas.h"

namespace qs::run {

std::vector<float> linear(std::span<const float> x, std::uint64_t rows, const Matrix& weight) {
  if (x.size() != rows * weight.cols)
    throw_bad_input("run.shape_mismatch",
                    fmt::format("{} takes {} inputs but is fed rows of {}: config.json and the "
                                "tensors disagree",
                                weight.module, weight.cols, rows ? x.size() / rows : 0),
                    {}, weight.module + ".weight");
  std::vector<float> y(rows * weight.rows);
  if (rows == 0) return y;
  if (weight.device == GemmDevice::Cuda) {
    cuda_linear(x, rows, weight, y);
    return y;
  }
  // Fixed tiles, so activations (and the calibration statistics made from them) do not depend
  // on the thread count.
  blas::sgemm(blas::Op::None, blas::Op::Transpose, rows, weight.rows, weight.cols, 1.0f, x.data(),
              weight.cols, weight.values.data(), weight.cols, 0.0f, y.data(), weight.rows);
  return y;
}

void rms_norm(std::span<float> x, std::span<const float> weight, float eps) {
  const std::size_t width = weight.size();
  tbb::parallel_for(std::size_t{0}, x.size() / width, [&](std::size_t row) {
    float* values = x.data() + row * width;
    double sum = 0.0;
    for (std::size_t i = 0; i < width; ++i) sum += static_cast<double>(values[i]) * values[i];
    const float scale = 1.0f / std::sqrt(static_cast<float>(sum / width) + eps);
    for (std::size_t i = 0; i < width; ++i) values[i] = values[i] * scale * weight[i];
  });
}

void layer_norm(std::span<float> x, std::span<const float> weight, std::span<const float> bias,
                float eps) {
  const std::size_t width = weight.size();
  tbb::parallel_for(std::size_t{0}, x.size() / width, [&](std::size_t row) {
    float* values = x.data() + row * width;
    double mean = 0.0;
    for (std::size_t i = 0; i < width; ++i) mean += values[i];
    mean /= width;
    double variance = 0.0;
    for (std::size_t i = 0; i < width; ++i) variance += (values[i] - mean) * (values[i] - mean);
    variance /= width;
    const double scale = 1.0 / std::sqrt(variance + eps);
    for (std::size_t i = 0; i < width; ++i)
      values[i] = static_cast<float>((values[i] - mean) * scale) * weight[i] + bias[i];
  });
}

}  // namespace qs::run
