// The NVFP4 GPTQ sweep on the GPU: one kernel per 128-column block, a thread per row running the
// shared per-row step (gptq_nvfp4_row.h) with the block's slice of U in shared memory, then one
// cuBLAS SGEMM (pedantic fp32) for the lazy update. Built with -fmad=false so the per-column
// arithmetic rounds as on the host; the lazy update's summation order is cuBLAS's, so codes can
// differ from the CPU's where a value sits on a rounding boundary (as for the integer sweep).

#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "../gptq_nvfp4_row.h"
#include "../gptq_row_objective.h"
#include "cublas_handle.h"
#include "device_buffer.h"
#include "qs/quant/gptq_nvfp4.h"

namespace qs::gptq::detail {
namespace {

using qs::cuda::check;
using qs::cuda::check_cublas;
using qs::cuda::CublasHandle;
using qs::cuda::DeviceBuffer;

constexpr int kRowsPerCta = 64;

__global__ void sweep_nvfp4_block(float* w, std::uint64_t rows, std::uint64_t cols,
                                  std::uint64_t i1, int count, const float* u,
                                  const std::uint32_t* order, float s2, fp4::ScaleMethod method,
                                  const float* hessians, std::uint8_t* codes,
                                  std::uint8_t* scale_codes, float* errors,
                                  double* row_objective) {
  extern __shared__ float u_block[];  // [count, count]
  for (int index = threadIdx.x; index < count * count; index += blockDim.x)
    u_block[index] = u[(i1 + index / count) * cols + i1 + index % count];
  __syncthreads();
  const std::uint64_t r = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  sweep_nvfp4_row_span<fp4::ThresholdE2M1>(
      w + r * cols + i1, count, u_block, static_cast<std::uint64_t>(count), order + i1, s2, method,
      hessians, codes + r * cols, scale_codes + r * (cols / fp4::kBlockSize), errors + r * count);
  if (row_objective) row_objective[r] += sum_of_squares(errors + r * count, count);
}

}  // namespace

void sweep_nvfp4_cuda(std::span<const float> weight, const Nvfp4Sweep& sweep,
                      std::span<std::uint8_t> codes, std::span<std::uint8_t> scale_codes,
                      std::span<double> row_objective) {
  const std::uint64_t rows = sweep.rows, cols = sweep.cols;
  const auto& order = sweep.hessian->order;
  std::vector<float> permuted(rows * cols);
  for (std::uint64_t r = 0; r < rows; ++r)
    for (std::uint64_t j = 0; j < cols; ++j) permuted[r * cols + j] = weight[r * cols + order[j]];
  const std::size_t hessian_count = sweep.blocks ? sweep.blocks->blocks.size() : 0;
  DeviceBuffer<float> w(rows * cols), u(cols * cols), errors(rows * kLazyBlock),
      hessians(hessian_count);
  DeviceBuffer<std::uint32_t> device_order(cols);
  DeviceBuffer<std::uint8_t> device_codes(rows * cols), device_scales(scale_codes.size());
  w.upload(permuted.data(), permuted.size() * sizeof(float));
  u.upload(sweep.hessian->u.data(), sweep.hessian->u.size() * sizeof(float));
  device_order.upload(order.data(), cols * sizeof(std::uint32_t));
  DeviceBuffer<double> objective(row_objective.size());
  if (!row_objective.empty())
    objective.upload(row_objective.data(), row_objective.size_bytes());
  if (hessian_count) hessians.upload(sweep.blocks->blocks.data(), hessian_count * sizeof(float));
  const int shared_bytes = kLazyBlock * kLazyBlock * static_cast<int>(sizeof(float));
  check(cudaFuncSetAttribute(sweep_nvfp4_block, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             shared_bytes),
        "shared memory for sweep_nvfp4_block");
  CublasHandle blas;
  check_cublas(cublasSetMathMode(blas.handle, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
  const auto ctas = static_cast<unsigned>((rows + kRowsPerCta - 1) / kRowsPerCta);
  for (std::uint64_t i1 = 0; i1 < cols; i1 += kLazyBlock) {
    const std::uint64_t i2 = std::min<std::uint64_t>(i1 + kLazyBlock, cols);
    const int count = static_cast<int>(i2 - i1);
    sweep_nvfp4_block<<<ctas, kRowsPerCta, count * count * sizeof(float)>>>(
        w.data, rows, cols, i1, count, u.data, device_order.data, sweep.s2, sweep.method,
        hessian_count ? hessians.data : nullptr, device_codes.data, device_scales.data,
        errors.data, row_objective.empty() ? nullptr : objective.data);
    check(cudaGetLastError(), "launch sweep_nvfp4_block");
    if (i2 == cols) break;
    // Row-major W[:, i2:] −= E·U[i1:i2, i2:] is column-major W' −= U'·E' (primes: transposes).
    const float minus_one = -1.0f, one = 1.0f;
    check_cublas(cublasSgemm(blas.handle, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(cols - i2),
                             static_cast<int>(rows), count, &minus_one, u.data + i1 * cols + i2,
                             static_cast<int>(cols), errors.data, count, &one, w.data + i2,
                             static_cast<int>(cols)),
                 "lazy update");
  }
  check(cudaDeviceSynchronize(), "sweep");
  device_codes.download(codes.data(), rows * cols);
  device_scales.download(scale_codes.data(), scale_codes.size());
  if (!row_objective.empty())
    objective.download(row_objective.data(), row_objective.size_bytes());
}

}  // namespace qs::gptq::detail
