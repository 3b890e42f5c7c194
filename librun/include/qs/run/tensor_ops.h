#pragma once
// The few fp32 operations the forward needs, on row-major buffers. GEMMs go to
// OpenBLAS in fixed tiles (qs/quant/deterministic_blas.h: results independent of the thread
// count); the rest are plain loops over rows, parallel with oneTBB.

#include <cstdint>
#include <span>
#include <vector>

#include "qs/run/weight_loader.h"

namespace qs::run {

// y[rows, W.rows] = x[rows, W.cols] · Wᵀ, on the matrix's device.
std::vector<float> linear(std::span<const float> x, std::uint64_t rows, const Matrix& weight);
// The cuBLAS path of linear() (fp32 math, TF32 off); BadInput "cuda.unavailable" in builds
// without CUDA.
void cuda_linear(std::span<const float> x, std::uint64_t rows, const Matrix& weight,
                 std::span<float> y);

// In place, per row of width `weight.size()`: x · rsqrt(mean(x²) + eps) · weight.
void rms_norm(std::span<float> x, std::span<const float> weight, float eps);
// In place, per row: (x − mean) / sqrt(var + eps) · weight + bias.
void layer_norm(std::span<float> x, std::span<const float> weight, std::span<const float> bias,
                float eps);

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace qs::run
