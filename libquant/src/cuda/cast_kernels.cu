// GPU element casts. The kernels only apply the QS_HOST_DEVICE scalar codecs from
// qs/ckpt/core/codecs.h element by element; the host code below sizes launches, moves data and
// turns CUDA errors into qs::Error.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/quant/cuda_casts.h"

namespace qs {
namespace {

// ----------------------------------------------------------------------------------------------
// Kernels

// Functors rather than lambdas so no --extended-lambda flag is needed.
struct EncodeBf16 {
  __device__ std::uint16_t operator()(float value) const { return f32_to_bf16(value); }
};
struct EncodeE4m3Satfinite {
  __device__ std::uint8_t operator()(float value) const { return f32_to_e4m3_satfinite(value); }
};
struct EncodeE5m2Satfinite {
  __device__ std::uint8_t operator()(float value) const { return f32_to_e5m2_satfinite(value); }
};
struct DecodeBf16 {
  __device__ float operator()(std::uint16_t code) const { return bf16_to_f32(code); }
};
struct DecodeE4m3 {
  __device__ float operator()(std::uint8_t code) const { return e4m3_to_f32(code); }
};

// Grid-stride loops, so any element count works with a bounded grid.
__device__ inline std::size_t first_index() {
  return static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline std::size_t grid_stride() {
  return static_cast<std::size_t>(gridDim.x) * blockDim.x;
}

template <typename In, typename Out, typename Convert>
__global__ void convert_each_kernel(const In* in, Out* out, std::size_t count, Convert convert) {
  for (std::size_t i = first_index(); i < count; i += grid_stride()) out[i] = convert(in[i]);
}

// One thread per output byte; an odd count pads the last high nibble with code 0.
__global__ void encode_e2m1_packed_kernel(const float* in, std::uint8_t* packed, std::size_t count) {
  const std::size_t bytes = count / 2 + count % 2;
  for (std::size_t i = first_index(); i < bytes; i += grid_stride()) {
    const std::uint8_t even = f32_to_e2m1(in[2 * i]);
    const std::uint8_t odd = 2 * i + 1 < count ? f32_to_e2m1(in[2 * i + 1]) : std::uint8_t{0};
    packed[i] = pack_e2m1_pair(even, odd);
  }
}

__global__ void decode_e2m1_packed_kernel(const std::uint8_t* packed, float* out, std::size_t count) {
  const std::size_t bytes = count / 2 + count % 2;
  for (std::size_t i = first_index(); i < bytes; i += grid_stride()) {
    const std::uint8_t byte = packed[i];
    out[2 * i] = e2m1_to_f32(unpack_e2m1_even(byte));
    if (2 * i + 1 < count) out[2 * i + 1] = e2m1_to_f32(unpack_e2m1_odd(byte));
  }
}

// ----------------------------------------------------------------------------------------------
// Host side

constexpr unsigned kThreadsPerBlock = 256;
// Enough blocks to fill any current GPU many times over; the grid-stride loop covers the rest.
constexpr std::size_t kMaxBlocks = std::size_t{1} << 16;

unsigned blocks_for(std::size_t work_items) {
  const std::size_t wanted = (work_items + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return static_cast<unsigned>(std::min(wanted, kMaxBlocks));
}

void check_cuda(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess)
    throw Error(ErrorClass::Internal, "cuda.cast_failed",
                what + " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

std::size_t packed_e2m1_bytes(std::size_t elements) { return elements / 2 + elements % 2; }

void check_sizes(const char* cast, std::size_t expected, std::size_t actual) {
  if (expected != actual)
    throw Error(ErrorClass::Internal, "codecs.size_mismatch",
                std::string(cast) + " on the GPU: expected an output of " + std::to_string(expected) +
                    " units, got " + std::to_string(actual));
}

template <typename In, typename Out, typename Convert>
void launch_convert_each(const char* cast, const In* in, Out* out, std::size_t count,
                         cudaStream_t stream, Convert convert) {
  if (count == 0) return;
  convert_each_kernel<<<blocks_for(count), kThreadsPerBlock, 0, stream>>>(in, out, count, convert);
  check_cuda(cudaGetLastError(), std::string("launching ") + cast);
}

// Owns one cudaMalloc'd array for the duration of a host-to-host call.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(std::size_t count) {
    if (count != 0) check_cuda(cudaMalloc(&data_, count * sizeof(T)), "cudaMalloc for a cast buffer");
  }
  ~DeviceArray() {
    if (data_ != nullptr) cudaFree(data_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* data() const { return data_; }

 private:
  T* data_ = nullptr;
};

// Copies `in` to the GPU, runs `launch(device_in, device_out)` on the default stream and
// copies the result into `out`; the blocking copy back also reports kernel failures.
template <typename In, typename Out, typename Launch>
void run_host_to_host(const char* cast, std::span<const In> in, std::span<Out> out, Launch launch) {
  DeviceArray<In> device_in(in.size());
  DeviceArray<Out> device_out(out.size());
  if (!in.empty())
    check_cuda(cudaMemcpy(device_in.data(), in.data(), in.size_bytes(), cudaMemcpyHostToDevice),
               std::string("copying the input of ") + cast + " to the GPU");
  launch(device_in.data(), device_out.data());
  if (!out.empty())
    check_cuda(cudaMemcpy(out.data(), device_out.data(), out.size_bytes(), cudaMemcpyDeviceToHost),
               std::string("running ") + cast + " and copying its result back");
}

}  // namespace

void launch_f32_to_bf16(const float* device_in, std::uint16_t* device_out, std::size_t count,
                        cudaStream_t stream) {
  launch_convert_each("f32 → bf16", device_in, device_out, count, stream, EncodeBf16{});
}

void launch_f32_to_e4m3_satfinite(const float* device_in, std::uint8_t* device_out,
                                  std::size_t count, cudaStream_t stream) {
  launch_convert_each("f32 → e4m3", device_in, device_out, count, stream, EncodeE4m3Satfinite{});
}

void launch_f32_to_e5m2_satfinite(const float* device_in, std::uint8_t* device_out,
                                  std::size_t count, cudaStream_t stream) {
  launch_convert_each("f32 → e5m2", device_in, device_out, count, stream, EncodeE5m2Satfinite{});
}

void launch_bf16_to_f32(const std::uint16_t* device_in, float* device_out, std::size_t count,
                        cudaStream_t stream) {
  launch_convert_each("bf16 → f32", device_in, device_out, count, stream, DecodeBf16{});
}

void launch_e4m3_to_f32(const std::uint8_t* device_in, float* device_out, std::size_t count,
                        cudaStream_t stream) {
  launch_convert_each("e4m3 → f32", device_in, device_out, count, stream, DecodeE4m3{});
}

void launch_f32_to_e2m1_packed(const float* device_in, std::uint8_t* device_packed,
                               std::size_t count, cudaStream_t stream) {
  if (count == 0) return;
  encode_e2m1_packed_kernel<<<blocks_for(packed_e2m1_bytes(count)), kThreadsPerBlock, 0, stream>>>(
      device_in, device_packed, count);
  check_cuda(cudaGetLastError(), "launching f32 → e2m1 packed");
}

void launch_e2m1_packed_to_f32(const std::uint8_t* device_packed, float* device_out,
                               std::size_t count, cudaStream_t stream) {
  if (count == 0) return;
  decode_e2m1_packed_kernel<<<blocks_for(packed_e2m1_bytes(count)), kThreadsPerBlock, 0, stream>>>(
      device_packed, device_out, count);
  check_cuda(cudaGetLastError(), "launching e2m1 packed → f32");
}

void gpu_f32_to_bf16(std::span<const float> in, std::span<std::uint16_t> out) {
  check_sizes("f32 → bf16", in.size(), out.size());
  run_host_to_host("f32 → bf16", in, out, [&](const float* device_in, std::uint16_t* device_out) {
    launch_f32_to_bf16(device_in, device_out, in.size(), nullptr);
  });
}

void gpu_f32_to_e4m3_satfinite(std::span<const float> in, std::span<std::uint8_t> out) {
  check_sizes("f32 → e4m3", in.size(), out.size());
  run_host_to_host("f32 → e4m3", in, out, [&](const float* device_in, std::uint8_t* device_out) {
    launch_f32_to_e4m3_satfinite(device_in, device_out, in.size(), nullptr);
  });
}

void gpu_f32_to_e5m2_satfinite(std::span<const float> in, std::span<std::uint8_t> out) {
  check_sizes("f32 → e5m2", in.size(), out.size());
  run_host_to_host("f32 → e5m2", in, out, [&](const float* device_in, std::uint8_t* device_out) {
    launch_f32_to_e5m2_satfinite(device_in, device_out, in.size(), nullptr);
  });
}

void gpu_f32_to_e2m1_packed(std::span<const float> in, std::span<std::uint8_t> packed) {
  check_sizes("f32 → e2m1 packed", packed_e2m1_bytes(in.size()), packed.size());
  run_host_to_host("f32 → e2m1 packed", in, packed,
                   [&](const float* device_in, std::uint8_t* device_packed) {
                     launch_f32_to_e2m1_packed(device_in, device_packed, in.size(), nullptr);
                   });
}

void gpu_bf16_to_f32(std::span<const std::uint16_t> in, std::span<float> out) {
  check_sizes("bf16 → f32", in.size(), out.size());
  run_host_to_host("bf16 → f32", in, out, [&](const std::uint16_t* device_in, float* device_out) {
    launch_bf16_to_f32(device_in, device_out, in.size(), nullptr);
  });
}

void gpu_e4m3_to_f32(std::span<const std::uint8_t> in, std::span<float> out) {
  check_sizes("e4m3 → f32", in.size(), out.size());
  run_host_to_host("e4m3 → f32", in, out, [&](const std::uint8_t* device_in, float* device_out) {
    launch_e4m3_to_f32(device_in, device_out, in.size(), nullptr);
  });
}

void gpu_e2m1_packed_to_f32(std::span<const std::uint8_t> packed, std::span<float> out) {
  check_sizes("e2m1 packed → f32 (bytes)", packed_e2m1_bytes(out.size()), packed.size());
  run_host_to_host("e2m1 packed → f32", packed, out,
                   [&](const std::uint8_t* device_packed, float* device_out) {
                     launch_e2m1_packed_to_f32(device_packed, device_out, out.size(), nullptr);
                   });
}

}  // namespace qs
