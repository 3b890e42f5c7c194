// The CUDA backend: one thread per 16-element block, running the same QS_HOST_DEVICE block
// functions as the CPU (fp4_block.h). Built with -fmad=false so no multiply-add is fused and
// the squared errors that pick scale codes round exactly as on the host.

#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "device_buffer.h"
#include "qs/ckpt/core/error.h"
#include "qs/quant/fp4_quantizer.h"

namespace qs::fp4::detail {
namespace {

using cuda::check;
using cuda::DeviceBuffer;

__device__ float decode_element(const unsigned char* bytes, DType dtype, std::uint64_t index) {
  if (dtype == DType::F32) return reinterpret_cast<const float*>(bytes)[index];
  const std::uint16_t code = reinterpret_cast<const std::uint16_t*>(bytes)[index];
  return dtype == DType::BF16 ? bf16_to_f32(code) : f16_to_f32(code);
}

// `hessians` (nullptr unless the hessian method has statistics): [blocks per row][16][16].
__global__ void quantize_blocks(const unsigned char* weight, DType dtype, std::uint64_t blocks,
                                std::uint64_t blocks_per_row, float s2, ScaleMethod method,
                                const float* hessians, std::uint8_t* packed,
                                std::uint8_t* scale_codes, float* block_signals,
                                float* block_errors) {
  const std::uint64_t index = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= blocks) return;
  float block[kBlockSize];
  for (int i = 0; i < kBlockSize; ++i)
    block[i] = decode_element(weight, dtype, index * kBlockSize + i);
  const float* hessian =
      hessians ? hessians + (index % blocks_per_row) * kBlockSize * kBlockSize : nullptr;
  const std::uint8_t code = choose_scale_code<ThresholdE2M1>(block, s2, method, hessian);
  scale_codes[index] = code;
  encode_block<ThresholdE2M1>(block, code, s2, packed + index * (kBlockSize / 2));
  block_signals[index] = block_signal(block);
  block_errors[index] = block_squared_error<ThresholdE2M1>(block, code, s2);
}

}  // namespace

ErrorEnergy quantize_cuda(const WeightView& weight, float s2, ScaleMethod method, Fp4Buffers out,
                          const BlockHessians* hessians) {
  const std::uint64_t blocks = weight.rows * weight.cols / kBlockSize;
  const bool weighted = hessians && method == ScaleMethod::Hessian;
  DeviceBuffer<float> device_hessians(weighted ? hessians->blocks.size() : 0);
  if (weighted)
    check(cudaMemcpy(device_hessians.data, hessians->blocks.data(),
                     hessians->blocks.size() * sizeof(float), cudaMemcpyHostToDevice),
          "copy block Hessians to device");
  DeviceBuffer<unsigned char> device_weight(weight.bytes.size());
  DeviceBuffer<std::uint8_t> device_packed(out.packed.size());
  DeviceBuffer<std::uint8_t> device_scales(out.scale_codes.size());
  DeviceBuffer<float> device_signals(blocks);
  DeviceBuffer<float> device_errors(blocks);
  check(cudaMemcpy(device_weight.data, weight.bytes.data(), weight.bytes.size(),
                   cudaMemcpyHostToDevice),
        "copy weight to device");
  constexpr int kThreads = 256;
  const auto grid = static_cast<unsigned>((blocks + kThreads - 1) / kThreads);
  if (blocks > 0)
    quantize_blocks<<<grid, kThreads>>>(
        device_weight.data, weight.dtype, blocks, weight.cols / kBlockSize, s2, method,
        weighted ? device_hessians.data : nullptr, device_packed.data, device_scales.data,
        device_signals.data, device_errors.data);
  check(cudaGetLastError(), "launch quantize_blocks");
  std::vector<float> signals(blocks), errors(blocks);
  check(
      cudaMemcpy(out.packed.data(), device_packed.data, out.packed.size(), cudaMemcpyDeviceToHost),
      "copy codes to host");
  check(cudaMemcpy(out.scale_codes.data(), device_scales.data, out.scale_codes.size(),
                   cudaMemcpyDeviceToHost),
        "copy scales to host");
  check(cudaMemcpy(signals.data(), device_signals.data, blocks * sizeof(float),
                   cudaMemcpyDeviceToHost),
        "copy signals to host");
  check(
      cudaMemcpy(errors.data(), device_errors.data, blocks * sizeof(float), cudaMemcpyDeviceToHost),
      "copy errors to host");
  // The same summation order as the host backends: blocks in order within a row, then rows.
  const std::uint64_t blocks_per_row = weight.cols / kBlockSize;
  ErrorEnergy total;
  for (std::uint64_t r = 0; r < weight.rows; ++r) {
    ErrorEnergy row;
    for (std::uint64_t b = 0; b < blocks_per_row; ++b) {
      row.signal += signals[r * blocks_per_row + b];
      row.error += errors[r * blocks_per_row + b];
    }
    total.signal += row.signal;
    total.error += row.error;
  }
  return total;
}

}  // namespace qs::fp4::detail
