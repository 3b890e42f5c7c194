#pragma once
// Element casts on the GPU, running the same QS_HOST_DEVICE scalar codecs as the host
// (qs/ckpt/core/codecs.h), so their output is bit-identical to the CPU path.
//
// Two forms of each cast:
//  * launch_*: device pointers in and out, enqueued on `stream`, no synchronisation; for
//    kernels that already hold their data on the GPU.
//  * gpu_*: host spans in and out; copies in, runs, copies back and waits. For tests and
//    one-off conversions; it allocates per call.
// Sizes follow the host batch functions: packed e2m1 has (count + 1) / 2 bytes, the last high
// nibble 0 for an odd count. CUDA failures and size mismatches throw qs::Error (Internal).
//
// Only available in builds with CUDA (QS_HAVE_CUDA); callers check qs::cuda_availability()
// before using them.

#ifdef QS_HAVE_CUDA

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace qs {

void launch_f32_to_bf16(const float* device_in, std::uint16_t* device_out, std::size_t count,
                        cudaStream_t stream);
void launch_f32_to_e4m3_satfinite(const float* device_in, std::uint8_t* device_out,
                                  std::size_t count, cudaStream_t stream);
void launch_f32_to_e5m2_satfinite(const float* device_in, std::uint8_t* device_out,
                                  std::size_t count, cudaStream_t stream);
// `count` is the number of f32 elements; writes (count + 1) / 2 bytes.
void launch_f32_to_e2m1_packed(const float* device_in, std::uint8_t* device_packed,
                               std::size_t count, cudaStream_t stream);
void launch_bf16_to_f32(const std::uint16_t* device_in, float* device_out, std::size_t count,
                        cudaStream_t stream);
void launch_e4m3_to_f32(const std::uint8_t* device_in, float* device_out, std::size_t count,
                        cudaStream_t stream);
// `count` is the number of f32 elements; reads (count + 1) / 2 bytes.
void launch_e2m1_packed_to_f32(const std::uint8_t* device_packed, float* device_out,
                               std::size_t count, cudaStream_t stream);

void gpu_f32_to_bf16(std::span<const float> in, std::span<std::uint16_t> out);
void gpu_f32_to_e4m3_satfinite(std::span<const float> in, std::span<std::uint8_t> out);
void gpu_f32_to_e5m2_satfinite(std::span<const float> in, std::span<std::uint8_t> out);
void gpu_f32_to_e2m1_packed(std::span<const float> in, std::span<std::uint8_t> packed);
void gpu_bf16_to_f32(std::span<const std::uint16_t> in, std::span<float> out);
void gpu_e4m3_to_f32(std::span<const std::uint8_t> in, std::span<float> out);
void gpu_e2m1_packed_to_f32(std::span<const std::uint8_t> packed, std::span<float> out);

}  // namespace qs

#endif  // QS_HAVE_CUDA
