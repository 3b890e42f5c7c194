// The GPTQ-VQ sweep on the GPU (docs/algorithms/vq.md, "Backends"): one kernel per 128-column
// block with a thread per row running the host's per-row step (vq_sweep_row.h), the block's
// slice of U in shared memory, the codebook and the per-vector metric tables in global memory
// (read-only, cached); then one cuBLAS SGEMM for the lazy update of the later columns. The codes
// and scales match the host's as long as the lazy updates do (cuBLAS sums in its own order, so
// the GPU is held to the reference by agreement, not bit for bit).

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "../gptq_row_objective.h"
#include "../vq_sweep.h"
#include "cublas_handle.h"
#include "device_buffer.h"

namespace qs::vq::detail {
namespace {

using qs::cuda::check;
using qs::cuda::check_cublas;
using qs::cuda::CublasHandle;
using qs::cuda::DeviceBuffer;

constexpr int kRowsPerCta = 64;

__global__ void sweep_vq_block(SweepPlan plan, float* w, std::uint64_t i1, int count,
                               std::uint32_t* codes, float* scales, float* swept, float* errors,
                               double* row_objective) {
  extern __shared__ float u_block[];  // [count, count]
  const std::uint64_t cols = plan.cols;
  if (plan.u) {
    for (int index = threadIdx.x; index < count * count; index += blockDim.x)
      u_block[index] = plan.u[(i1 + index / count) * cols + i1 + index % count];
    __syncthreads();
  }
  const std::uint64_t r = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= plan.rows) return;
  float* row_errors = errors + r * count;
  sweep_vq_row_span(plan, {w + r * cols, i1, count, u_block, static_cast<std::uint64_t>(count),
                           codes + r * (cols / plan.d), scales + r * (cols / kScaleGroup),
                           swept ? swept + r * cols : nullptr, row_errors});
  if (plan.u && row_objective) row_objective[r] += gptq::detail::sum_of_squares(row_errors, count);
}

template <typename T>
void upload(DeviceBuffer<T>& buffer, const T* host, std::size_t count) {
  if (count) buffer.upload(host, count * sizeof(T));
}

}  // namespace

void sweep_vq_cuda(std::span<float> w, const SweepPlan& plan, const SweepOutputs& out) {
  const std::uint64_t rows = plan.rows, cols = plan.cols;
  const std::uint64_t vectors = cols / plan.d;
  const std::uint64_t metric_count = plan.metrics ? vectors * plan.d * plan.d : 0;
  const std::uint64_t term_count =
      plan.terms_stride ? vectors * plan.terms_stride : plan.terms_padded;
  DeviceBuffer<float> device_w(rows * cols), u(plan.u ? cols * cols : 0),
      codewords(std::uint64_t{plan.k} * plan.d), metrics(metric_count), terms(term_count),
      scales(out.scales.size()), swept(out.swept.size()), errors(rows * gptq::kLazyBlock);
  DeviceBuffer<std::uint32_t> order(cols), position(cols), codes(out.codes.size());
  DeviceBuffer<double> objective(out.row_objective.size());
  upload(device_w, w.data(), w.size());
  if (plan.u) upload(u, plan.u, cols * cols);
  upload(codewords, plan.codewords, std::uint64_t{plan.k} * plan.d);
  if (plan.metrics) upload(metrics, plan.metrics, metric_count);
  upload(terms, plan.terms, term_count);
  upload(scales, out.scales.data(), out.scales.size());
  upload(order, plan.order, cols);
  upload(position, plan.position, cols);
  upload(objective, out.row_objective.data(), out.row_objective.size());

  SweepPlan device_plan = plan;
  device_plan.u = plan.u ? u.data : nullptr;
  device_plan.codewords = codewords.data;
  device_plan.metrics = plan.metrics ? metrics.data : nullptr;
  device_plan.terms = terms.data;
  device_plan.order = order.data;
  device_plan.position = position.data;

  check(cudaFuncSetAttribute(sweep_vq_block, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             gptq::kLazyBlock * gptq::kLazyBlock * sizeof(float)),
        "shared memory for sweep_vq_block");
  CublasHandle blas;
  // The lazy update in true fp32, as on the host (no TF32).
  check_cublas(cublasSetMathMode(blas.handle, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
  const auto ctas = static_cast<unsigned>((rows + kRowsPerCta - 1) / kRowsPerCta);
  for (std::uint64_t i1 = 0; i1 < cols; i1 += gptq::kLazyBlock) {
    const std::uint64_t i2 = std::min<std::uint64_t>(i1 + gptq::kLazyBlock, cols);
    const int count = static_cast<int>(i2 - i1);
    sweep_vq_block<<<ctas, kRowsPerCta, plan.u ? count * count * sizeof(float) : 0>>>(
        device_plan, device_w.data, i1, count, codes.data, scales.data,
        out.swept.empty() ? nullptr : swept.data, errors.data,
        out.row_objective.empty() ? nullptr : objective.data);
    check(cudaGetLastError(), "launch sweep_vq_block");
    if (!plan.u || i2 == cols) continue;
    // Row-major W[:, i2:] −= E·U[i1:i2, i2:] is column-major W' −= U'·E' (primes: transposes).
    const float minus_one = -1.0f, one = 1.0f;
    check_cublas(cublasSgemm(blas.handle, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(cols - i2),
                             static_cast<int>(rows), count, &minus_one, u.data + i1 * cols + i2,
                             static_cast<int>(cols), errors.data, count, &one, device_w.data + i2,
                             static_cast<int>(cols)),
                 "lazy update");
  }
  check(cudaDeviceSynchronize(), "VQ sweep");
  codes.download(out.codes.data(), out.codes.size_bytes());
  scales.download(out.scales.data(), out.scales.size_bytes());
  if (!out.swept.empty()) swept.download(out.swept.data(), out.swept.size_bytes());
  if (!out.row_objective.empty())
    objective.download(out.row_objective.data(), out.row_objective.size_bytes());
}

}  // namespace qs::vq::detail
