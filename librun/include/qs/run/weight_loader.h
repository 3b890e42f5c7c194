#pragma once
// Weights for the runner, as f32, from any format quantsmith reads or writes: float tensors
// (BF16, F16, F32) expand exactly; NVFP4 Linears (modelopt `weight` + `weight_scale` +
// `weight_scale_2`, or compressed-tensors `weight_packed` + `weight_scale` +
// `weight_global_scale`) are dequantized on load with libquant's reference decoding, and
// compressed-tensors pack-quantized INT2/4/8 (symmetric or with packed zero points) too.
// Layers are loaded one at a time by the caller, so memory holds one layer, not the model.

#include <cstdint>
#include <string>
#include <vector>

#include "qs/ckpt/checkpoint.h"

namespace qs::run {

// Where a matrix is multiplied: OpenBLAS on the CPU, or cuBLAS (fp32, no TF32) on the GPU.
enum class GemmDevice : std::uint8_t { Cpu, Cuda };

struct Matrix {
  std::string module;  // where it came from, for errors
  GemmDevice device = GemmDevice::Cpu;
  std::uint64_t rows = 0;     // out features
  std::uint64_t cols = 0;     // in features
  std::vector<float> values;  // row-major [rows, cols]
};

class WeightLoader {
 public:
  explicit WeightLoader(const Checkpoint& checkpoint, GemmDevice device = GemmDevice::Cpu)
      : checkpoint_(checkpoint), device_(device) {}
  // The Linear `module`'s weight [out, in], whatever its storage. Throws BadInput
  // "run.missing_tensor" naming the module when nothing usable is stored.
  Matrix linear(const std::string& module) const;
  // A float tensor (norm weights, biases), flattened.
  std::vector<float> vector(const std::string& name) const;

 private:
  const Checkpoint& checkpoint_;
  GemmDevice device_;
};

}  // namespace qs::run
