#include <cuda_runtime.h>

#include <string>

#include "qs/ckpt/core/error.h"
#include "qs/quant/cuda_availability.h"

namespace qs {

CudaAvailability query_cuda_devices() {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    // Clear the sticky error so later CPU-only work is not affected.
    cudaGetLastError();
    return {false, 0, std::string("no usable CUDA device: ") + cudaGetErrorString(status), {}};
  }
  if (count == 0) return {false, 0, "no CUDA device present", {}};
  CudaAvailability availability{true, count, {}, {}};
  for (int index = 0; index < count; ++index) {
    cudaDeviceProp properties{};
    cudaGetDeviceProperties(&properties, index);
    availability.device_names.emplace_back(properties.name);
  }
  availability.reason = availability.device_names[0];
  return availability;
}

void use_cuda_device(int index) {
  const auto cuda = query_cuda_devices();
  if (!cuda.usable)
    throw_bad_input("cuda.unavailable", "cuda:" + std::to_string(index) + ": " + cuda.reason);
  if (index < 0 || index >= cuda.device_count)
    throw_bad_input("device.not_found", "cuda:" + std::to_string(index) +
                                            " does not exist: " + "this machine has " +
                                            std::to_string(cuda.device_count) + " CUDA device(s)");
  const cudaError_t status = cudaSetDevice(index);
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw_bad_input("cuda.unavailable",
                    "cuda:" + std::to_string(index) + ": " + cudaGetErrorString(status));
  }
}

}  // namespace qs
