// GPTQ's report on the GPU: tr(M·H·Mᵀ) as one cuBLAS SGEMM (pedantic fp32, no TF32) and a
// thread per row summing m_i·(M·H)_i in f64 in column order; the host adds the row sums in row
// order, so the figure does not depend on the launch shape. The report only: no output byte
// depends on it.

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <vector>

#include "cublas_handle.h"
#include "device_buffer.h"
#include "qs/quant/gptq.h"

namespace qs::gptq::detail {
namespace {

using qs::cuda::check;
using qs::cuda::check_cublas;
using qs::cuda::CublasHandle;
using qs::cuda::DeviceBuffer;

__global__ void row_dots(const float* matrix, const float* product, std::uint64_t rows,
                         std::uint64_t cols, double* sums) {
  const std::uint64_t r = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  double sum = 0.0;
  for (std::uint64_t c = 0; c < cols; ++c)
    sum += static_cast<double>(matrix[r * cols + c]) * product[r * cols + c];
  sums[r] = sum;
}

}  // namespace

std::vector<double> quadratic_forms_cuda(std::span<const std::span<const float>> matrices,
                                         std::uint64_t rows, std::uint64_t cols,
                                         const PreparedHessian& hessian) {
  DeviceBuffer<float> h(cols * cols), matrix(rows * cols), product(rows * cols);
  DeviceBuffer<double> sums(rows);
  h.upload(hessian.hessian.data(), cols * cols * sizeof(float));
  CublasHandle blas;
  check_cublas(cublasSetMathMode(blas.handle, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
  std::vector<double> results, row_sums(rows);
  for (const auto& m : matrices) {
    matrix.upload(m.data(), rows * cols * sizeof(float));
    // Row-major P = M·H is column-major Pᵀ = Hᵀ·Mᵀ; H is symmetric, so either operand order.
    const float one = 1.0f, zero = 0.0f;
    check_cublas(cublasSgemm(blas.handle, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(cols),
                             static_cast<int>(rows), static_cast<int>(cols), &one, h.data,
                             static_cast<int>(cols), matrix.data, static_cast<int>(cols), &zero,
                             product.data, static_cast<int>(cols)),
                 "objective product");
    constexpr unsigned kThreads = 128;
    row_dots<<<static_cast<unsigned>((rows + kThreads - 1) / kThreads), kThreads>>>(
        matrix.data, product.data, rows, cols, sums.data);
    check(cudaGetLastError(), "launch row_dots");
    sums.download(row_sums.data(), rows * sizeof(double));
    double total = 0.0;
    for (double sum : row_sums) total += sum;
    results.push_back(total);
  }
  return results;
}

}  // namespace qs::gptq::detail
