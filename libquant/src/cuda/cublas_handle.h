#pragma once
// cuBLAS errors as qs::Error and a handle owned by a scope, for the GPTQ sweeps.

#include <cublas_v2.h>

#include <string>

#include "qs/ckpt/core/error.h"

namespace qs::cuda {

inline void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(ErrorClass::Internal, "cuda.failure",
                std::string(what) + ": cuBLAS status " + std::to_string(static_cast<int>(status)));
}

struct CublasHandle {
  cublasHandle_t handle = nullptr;
  CublasHandle() { check_cublas(cublasCreate(&handle), "cublasCreate"); }
  ~CublasHandle() { cublasDestroy(handle); }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
};

}  // namespace qs::cuda
