#pragma once
// What every CUDA backend in libquant needs: errors turned into qs::Error, and device memory
// owned by a scope.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "qs/ckpt/core/error.h"

namespace qs::cuda {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw Error(ErrorClass::Internal, "cuda.failure",
                std::string(what) + ": " + cudaGetErrorString(status));
}

template <typename T>
struct DeviceBuffer {
  T* data = nullptr;
  std::size_t count = 0;
  // One spare byte so an empty buffer still has a valid address.
  explicit DeviceBuffer(std::size_t count) : count(count) {
    check(cudaMalloc(reinterpret_cast<void**>(&data), count * sizeof(T) + 1), "cudaMalloc");
  }
  ~DeviceBuffer() { cudaFree(data); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void upload(const void* host, std::size_t bytes) {
    check(cudaMemcpy(data, host, bytes, cudaMemcpyHostToDevice), "copy to device");
  }
  void download(void* host, std::size_t bytes) const {
    check(cudaMemcpy(host, data, bytes, cudaMemcpyDeviceToHost), "copy to host");
  }
};

}  // namespace qs::cuda
