// The CUDA backend: one thread block per 128 × 128 tile. Its threads take the tile's amax
// (a max, exact in any order), one thread turns it into the scale, then every thread encodes
// its elements with the same QS_HOST_DEVICE functions as the host (fp8_block.h). Built with
// -fmad=false and IEEE division, so the codes equal the reference's.

#include <cuda_runtime_api.h>

#include "device_buffer.h"
#include "qs/ckpt/core/error.h"
#include "qs/quant/fp8_block_quantizer.h"

namespace qs::fp8::detail {
namespace {

using cuda::check;
using cuda::DeviceBuffer;

constexpr int kThreads = 256;

__device__ float load_element(const unsigned char* bytes, DType dtype, std::uint64_t index) {
  if (dtype == DType::F32) return reinterpret_cast<const float*>(bytes)[index];
  const std::uint16_t code = reinterpret_cast<const std::uint16_t*>(bytes)[index];
  return dtype == DType::BF16 ? bf16_to_f32(code) : f16_to_f32(code);
}

__global__ void quantize_tiles(const unsigned char* weight, DType dtype, std::uint64_t rows,
                               std::uint64_t cols, std::uint8_t* codes, float* scales) {
  const std::uint64_t tile_row = blockIdx.y;
  const std::uint64_t tile_column = blockIdx.x;
  const std::uint64_t row_begin = tile_row * kTileRows;
  const std::uint64_t column_begin = tile_column * kTileCols;
  const std::uint64_t height = rows - row_begin < kTileRows ? rows - row_begin : kTileRows;
  const std::uint64_t width = cols - column_begin < kTileCols ? cols - column_begin : kTileCols;
  const std::uint64_t elements = height * width;

  __shared__ float maxima[kThreads];
  __shared__ float tile_scale;
  float amax = 0.0f;
  for (std::uint64_t i = threadIdx.x; i < elements; i += kThreads) {
    const std::uint64_t index = (row_begin + i / width) * cols + column_begin + i % width;
    const float magnitude = finite_magnitude(load_element(weight, dtype, index));
    amax = magnitude > amax ? magnitude : amax;
  }
  maxima[threadIdx.x] = amax;
  __syncthreads();
  for (int width_left = kThreads / 2; width_left > 0; width_left /= 2) {
    if (threadIdx.x < width_left) {
      const float other = maxima[threadIdx.x + width_left];
      maxima[threadIdx.x] = other > maxima[threadIdx.x] ? other : maxima[threadIdx.x];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    tile_scale = scale_for_amax(maxima[0]);
    scales[tile_row * gridDim.x + tile_column] = tile_scale;
  }
  __syncthreads();
  const float scale = tile_scale;
  for (std::uint64_t i = threadIdx.x; i < elements; i += kThreads) {
    const std::uint64_t index = (row_begin + i / width) * cols + column_begin + i % width;
    codes[index] = encode(load_element(weight, dtype, index), scale);
  }
}

}  // namespace

void quantize_cuda(const WeightView& weight, Fp8Buffers out) {
  if (weight.rows == 0 || weight.cols == 0) return;
  DeviceBuffer<unsigned char> device_weight(weight.bytes.size());
  DeviceBuffer<std::uint8_t> device_codes(out.codes.size());
  DeviceBuffer<float> device_scales(out.scales.size());
  device_weight.upload(weight.bytes.data(), weight.bytes.size());
  const dim3 grid(static_cast<unsigned>(scale_cols(weight.cols)),
                  static_cast<unsigned>(scale_rows(weight.rows)));
  quantize_tiles<<<grid, kThreads>>>(device_weight.data, weight.dtype, weight.rows, weight.cols,
                                     device_codes.data, device_scales.data);
  check(cudaGetLastError(), "launch quantize_tiles");
  device_codes.download(out.codes.data(), out.codes.size());
  device_scales.download(out.scales.data(), out.scales.size() * sizeof(float));
}

}  // namespace qs::fp8::detail
