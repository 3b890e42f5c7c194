#include <cuda_runtime.h>

#include <string>

#include "qs/quant/cuda_availability.h"

namespace qs {

CudaAvailability query_cuda_devices() {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    // Clear the sticky error so later CPU-only work is not affected.
    cudaGetLastError();
    return {false, 0, std::string("no usable CUDA device: ") + cudaGetErrorString(status)};
  }
  if (count == 0) return {false, 0, "no CUDA device present"};
  cudaDeviceProp properties{};
  cudaGetDeviceProperties(&properties, 0);
  return {true, count, properties.name};
}

}  // namespace qs
