// The CUDA integer quantizer: the weight decoded to f32 once, then one thread per (row, group)
// running the same QS_HOST_DEVICE group functions as the host (int_group.h). Built with
// -fmad=false, so the MSE observer's squared errors round exactly as on the host.

#include <cuda_runtime_api.h>

#include <vector>

#include "device_buffer.h"
#include "qs/quant/int_quantizer.h"

namespace qs::intq::detail {
namespace {

using qs::cuda::check;
using qs::cuda::DeviceBuffer;

__global__ void decode_weight(const unsigned char* bytes, DType dtype, std::uint64_t count,
                              float* out) {
  const std::uint64_t index = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= count) return;
  if (dtype == DType::F32) {
    out[index] = reinterpret_cast<const float*>(bytes)[index];
    return;
  }
  const std::uint16_t code = reinterpret_cast<const std::uint16_t*>(bytes)[index];
  out[index] = dtype == DType::BF16 ? bf16_to_f32(code) : f16_to_f32(code);
}

__global__ void quantize_groups(const float* weight, std::uint64_t rows, std::uint64_t cols,
                                std::uint64_t width, IntFormat format, DType dtype,
                                Observer observer, std::int8_t* codes, float* scales,
                                std::int8_t* zeros, float* signals, float* errors) {
  const std::uint64_t groups = cols / width;
  const std::uint64_t slot = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (slot >= rows * groups) return;
  const std::uint64_t row = slot / groups, group = slot % groups;
  const float* values = weight + row * cols + group * width;
  const GroupParams params = observe_group(values, static_cast<int>(width), format, dtype, observer);
  scales[slot] = params.scale;
  zeros[slot] = static_cast<std::int8_t>(params.zero);
  float signal = 0.0f, error = 0.0f;
  for (std::uint64_t i = 0; i < width; ++i) {
    const int code = quantize_value(values[i], params, format, dtype);
    codes[row * cols + group * width + i] = static_cast<std::int8_t>(code);
    const float difference = values[i] - dequantize_value(code, params, dtype);
    signal += values[i] * values[i];
    error += difference * difference;
  }
  signals[slot] = signal;
  errors[slot] = error;
}

unsigned grid_for(std::uint64_t count, int threads) {
  return static_cast<unsigned>((count + threads - 1) / threads);
}

}  // namespace

ErrorEnergy quantize_cuda(const WeightView& weight, const IntScheme& scheme, IntQuantized& out) {
  const std::uint64_t elements = weight.rows * weight.cols;
  const std::uint64_t slots = out.scales.size();
  DeviceBuffer<unsigned char> device_bytes(weight.bytes.size());
  DeviceBuffer<float> device_weight(elements);
  DeviceBuffer<std::int8_t> device_codes(elements);
  DeviceBuffer<float> device_scales(slots), device_signals(slots), device_errors(slots);
  DeviceBuffer<std::int8_t> device_zeros(slots);
  device_bytes.upload(weight.bytes.data(), weight.bytes.size());
  constexpr int kThreads = 256;
  if (elements > 0) {
    decode_weight<<<grid_for(elements, kThreads), kThreads>>>(device_bytes.data, weight.dtype,
                                                             elements, device_weight.data);
    check(cudaGetLastError(), "launch decode_weight");
    quantize_groups<<<grid_for(slots, kThreads), kThreads>>>(
        device_weight.data, weight.rows, weight.cols, scheme.group_width(weight.cols),
        scheme.format, weight.dtype, scheme.observer, device_codes.data, device_scales.data,
        device_zeros.data, device_signals.data, device_errors.data);
    check(cudaGetLastError(), "launch quantize_groups");
  }
  std::vector<float> signals(slots), errors(slots);
  device_codes.download(out.codes.data(), elements);
  device_scales.download(out.scales.data(), slots * sizeof(float));
  device_zeros.download(out.zeros.data(), slots);
  device_signals.download(signals.data(), slots * sizeof(float));
  device_errors.download(errors.data(), slots * sizeof(float));
  ErrorEnergy energy;
  for (std::uint64_t i = 0; i < slots; ++i) {
    energy.signal += signals[i];
    energy.error += errors[i];
  }
  return energy;
}

}  // namespace qs::intq::detail
