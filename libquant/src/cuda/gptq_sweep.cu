// GPTQ on the GPU: the inverse-Hessian factor through cuSOLVER (potrf + trtri, f64) and the
// column sweep as one kernel per 128-column block plus one cuBLAS SGEMM for the lazy update
// (docs/algorithms/gptq.md, "GPU"). Each thread owns one row: rows are independent given U,
// and the block's 128×128 slice of U sits in shared memory for all of them.

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cublas_handle.h"
#include "../gptq_row_objective.h"
#include "device_buffer.h"
#include "qs/quant/gptq.h"

namespace qs::gptq::detail {
namespace {

using qs::cuda::check;
using qs::cuda::check_cublas;
using qs::cuda::CublasHandle;
using qs::cuda::DeviceBuffer;

void check_cusolver(cusolverStatus_t status, const char* what) {
  if (status != CUSOLVER_STATUS_SUCCESS)
    throw Error(ErrorClass::Internal, "cuda.failure",
                std::string(what) + ": cuSOLVER status " + std::to_string(static_cast<int>(status)));
}

constexpr int kRowsPerCta = 64;

__global__ void sweep_block(float* w, std::uint64_t rows, std::uint64_t cols, std::uint64_t i1,
                            int count, const float* u, const std::uint32_t* order,
                            const float* scales, const std::int8_t* zeros, std::uint64_t groups,
                            std::uint64_t width, intq::IntFormat format, DType scale_dtype,
                            std::int8_t* codes, float* errors, double* row_objective) {
  extern __shared__ float u_block[];  // [count, count]
  for (int index = threadIdx.x; index < count * count; index += blockDim.x)
    u_block[index] = u[(i1 + index / count) * cols + i1 + index % count];
  __syncthreads();
  const std::uint64_t r = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float* row = w + r * cols + i1;
  float* row_errors = errors + r * count;
  for (int j = 0; j < count; ++j) {
    const std::uint32_t column = order[i1 + j];
    const intq::GroupParams params{scales[r * groups + column / width],
                                   zeros[r * groups + column / width]};
    const float value = row[j];
    const int code = intq::decodable_code(
        intq::quantize_value(value, params, format, DType::F32), params, scale_dtype);
    codes[r * cols + column] = static_cast<std::int8_t>(code);
    const float error = (value - intq::dequantize_value(code, params, scale_dtype)) /
                        u_block[j * count + j];
    for (int t = j + 1; t < count; ++t) row[t] -= error * u_block[j * count + t];
    row_errors[j] = error;
  }
  if (row_objective) row_objective[r] += sum_of_squares(row_errors, count);
}

struct CusolverHandle {
  cusolverDnHandle_t handle = nullptr;
  CusolverHandle() { check_cusolver(cusolverDnCreate(&handle), "cusolverDnCreate"); }
  ~CusolverHandle() { cusolverDnDestroy(handle); }
};

}  // namespace

bool inverse_cholesky_upper_cuda(std::vector<double>& reversed, std::uint64_t n,
                                 std::vector<float>& u) {
  CusolverHandle solver;
  DeviceBuffer<double> matrix(n * n);
  DeviceBuffer<int> info(1);
  matrix.upload(reversed.data(), n * n * sizeof(double));
  const int size = static_cast<int>(n);
  int work_size = 0;
  check_cusolver(cusolverDnDpotrf_bufferSize(solver.handle, CUBLAS_FILL_MODE_UPPER, size,
                                             matrix.data, size, &work_size),
                 "potrf buffer size");
  DeviceBuffer<double> work(static_cast<std::size_t>(work_size));
  check_cusolver(cusolverDnDpotrf(solver.handle, CUBLAS_FILL_MODE_UPPER, size, matrix.data, size,
                                  work.data, work_size, info.data),
                 "potrf");
  int status = 0;
  info.download(&status, sizeof(int));
  if (status != 0) return false;
  std::size_t device_bytes = 0, host_bytes = 0;
  check_cusolver(cusolverDnXtrtri_bufferSize(solver.handle, CUBLAS_FILL_MODE_UPPER,
                                             CUBLAS_DIAG_NON_UNIT, size, CUDA_R_64F, matrix.data,
                                             size, &device_bytes, &host_bytes),
                 "trtri buffer size");
  DeviceBuffer<unsigned char> device_work(device_bytes);
  std::vector<unsigned char> host_work(host_bytes + 1);
  check_cusolver(cusolverDnXtrtri(solver.handle, CUBLAS_FILL_MODE_UPPER, CUBLAS_DIAG_NON_UNIT,
                                  size, CUDA_R_64F, matrix.data, size, device_work.data,
                                  device_bytes, host_work.data(), host_bytes, info.data),
                 "trtri");
  info.download(&status, sizeof(int));
  if (status != 0) return false;
  matrix.download(reversed.data(), n * n * sizeof(double));
  u.assign(n * n, 0.0f);
  for (std::uint64_t i = 0; i < n; ++i)
    for (std::uint64_t j = i; j < n; ++j)
      u[i * n + j] = static_cast<float>(reversed[(n - 1 - i) * n + (n - 1 - j)]);
  return true;
}

void sweep_cuda(std::span<const float> weight, const intq::IntScheme& scheme,
                const PreparedHessian& hessian, intq::IntQuantized& out,
                std::span<double> row_objective) {
  const std::uint64_t rows = out.rows, cols = out.cols;
  const std::uint64_t groups = out.groups(), width = scheme.group_width(cols);
  std::vector<float> permuted(rows * cols);
  for (std::uint64_t r = 0; r < rows; ++r)
    for (std::uint64_t j = 0; j < cols; ++j)
      permuted[r * cols + j] = weight[r * cols + hessian.order[j]];
  DeviceBuffer<float> w(rows * cols), u(cols * cols), scales(out.scales.size()),
      errors(rows * kLazyBlock);
  DeviceBuffer<std::uint32_t> order(cols);
  DeviceBuffer<std::int8_t> zeros(out.zeros.size()), codes(rows * cols);
  w.upload(permuted.data(), permuted.size() * sizeof(float));
  u.upload(hessian.u.data(), hessian.u.size() * sizeof(float));
  scales.upload(out.scales.data(), out.scales.size() * sizeof(float));
  zeros.upload(out.zeros.data(), out.zeros.size());
  order.upload(hessian.order.data(), cols * sizeof(std::uint32_t));
  DeviceBuffer<double> objective(row_objective.size());
  if (!row_objective.empty())
    objective.upload(row_objective.data(), row_objective.size_bytes());
  const int shared_bytes = kLazyBlock * kLazyBlock * static_cast<int>(sizeof(float));
  check(cudaFuncSetAttribute(sweep_block, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             shared_bytes),
        "shared memory for sweep_block");
  CublasHandle blas;
  // Keep the lazy update in true fp32, as the reference implementations do (no TF32).
  check_cublas(cublasSetMathMode(blas.handle, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
  const auto ctas = static_cast<unsigned>((rows + kRowsPerCta - 1) / kRowsPerCta);
  for (std::uint64_t i1 = 0; i1 < cols; i1 += kLazyBlock) {
    const std::uint64_t i2 = std::min<std::uint64_t>(i1 + kLazyBlock, cols);
    const int count = static_cast<int>(i2 - i1);
    sweep_block<<<ctas, kRowsPerCta, count * count * sizeof(float)>>>(
        w.data, rows, cols, i1, count, u.data, order.data, scales.data, zeros.data, groups, width,
        scheme.format, out.scale_dtype, codes.data, errors.data,
        row_objective.empty() ? nullptr : objective.data);
    check(cudaGetLastError(), "launch sweep_block");
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
  codes.download(out.codes.data(), rows * cols);
  if (!row_objective.empty())
    objective.download(row_objective.data(), row_objective.size_bytes());
}

}  // namespace qs::gptq::detail
