// linear() on the GPU with cuBLAS: fp32 storage and fp32 math (pedantic: no TF32), so results
// stay within float tolerance of the OpenBLAS path. Weights arrive per layer, so each call
// copies its operands; a handle is created per thread and kept.

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "qs/ckpt/core/error.h"
#include "qs/run/tensor_ops.h"

namespace qs::run {
namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw Error(ErrorClass::Internal, "cuda.failure",
                std::string(what) + ": " + cudaGetErrorString(status));
}

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(ErrorClass::Internal, "cuda.failure",
                std::string(what) + ": cuBLAS status " + std::to_string(status));
}

struct Handle {
  cublasHandle_t handle = nullptr;
  Handle() {
    check(cublasCreate(&handle), "cublasCreate");
    check(cublasSetMathMode(handle, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
  }
  ~Handle() { cublasDestroy(handle); }
};

struct DeviceFloats {
  float* data = nullptr;
  explicit DeviceFloats(std::size_t count) {
    check(cudaMalloc(reinterpret_cast<void**>(&data), count * sizeof(float) + 1), "cudaMalloc");
  }
  ~DeviceFloats() { cudaFree(data); }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
};

}  // namespace

void cuda_linear(std::span<const float> x, std::uint64_t rows, const Matrix& weight,
                 std::span<float> y) {
  thread_local Handle handle;
  DeviceFloats device_x(x.size()), device_w(weight.values.size()), device_y(y.size());
  check(cudaMemcpy(device_x.data, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice),
        "copy inputs");
  check(cudaMemcpy(device_w.data, weight.values.data(), weight.values.size() * sizeof(float),
                   cudaMemcpyHostToDevice),
        "copy weight");
  // Row-major y[rows, N] = x[rows, K] · W[N, K]ᵀ is column-major yᵀ[N, rows] = W · xᵀ.
  const float one = 1.0f, zero = 0.0f;
  const int n = static_cast<int>(weight.rows), k = static_cast<int>(weight.cols);
  check(cublasSgemm(handle.handle, CUBLAS_OP_T, CUBLAS_OP_N, n, static_cast<int>(rows), k, &one,
                    device_w.data, k, device_x.data, k, &zero, device_y.data, n),
        "cublasSgemm");
  check(cudaMemcpy(y.data(), device_y.data, y.size() * sizeof(float), cudaMemcpyDeviceToHost),
        "copy outputs");
}

}  // namespace qs::run
