#pragma once
// Lets one definition of a small scalar function serve both the host code and CUDA kernels,
// so the GPU path cannot drift from the reference: nvcc compiles it twice, g++ sees a plain
// inline function.

#ifdef __CUDACC__
#define QS_HOST_DEVICE __host__ __device__
#else
#define QS_HOST_DEVICE
#endif
