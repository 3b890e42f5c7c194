#pragma once
// Weights for the runner, as f32, from any format quantsmith reads or writes: float tensors
// (BF16, F16, F32) expand exactly; NVFP4 Linears (modelopt `weight` + `weight_scale` +
// `weight_scale_2`, or compressed-tensors `weight_packed` + `weight_scale` +
// `weight_global_scale`) and compressed-tensors pack-quantized INT2..8 (symmetric or with packed
// zero points; the width from the config group's num_bits) are recognised, checked and
// dequantized through the weight-format registry (qs/ckpt/formats/weight_format.h: the
// format's detect and check, then libquant's decoder for it, dequantize_weight), as
// `validate --ref` and `mtp extract` do.
// Layers are loaded one at a time by the caller, so memory holds one layer, not the model.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/formats/quantized_weight.h"
#include "qs/ckpt/formats/vq_declaration.h"
#include "qs/ckpt/io/checkpoint.h"

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

// Weights that stand in for the checkpoint's for some Linears: the layer-pipelined quantize
// job runs a layer again with the weights it just quantized (decoded on demand, one module at
// a time), so the next layer is calibrated on what the quantized model computes.
class WeightOverrides {
 public:
  virtual ~WeightOverrides() = default;
  // The Linear's [out, in] f32 weight, or nullopt to read the checkpoint's.
  virtual std::optional<Matrix> linear(const std::string& module) const = 0;
};

class WeightLoader {
 public:
  explicit WeightLoader(const Checkpoint& checkpoint, GemmDevice device = GemmDevice::Cpu,
                        const WeightOverrides* overrides = nullptr)
      : checkpoint_(checkpoint), device_(device), declared_bits_(checkpoint.config()),
        vq_(VqDeclaration::of(checkpoint)), overrides_(overrides) {}
  // The Linear `module`'s weight [out, in], whatever its storage. Throws BadInput
  // "run.missing_tensor" naming the module when nothing usable is stored,
  // "run.bad_quantized_weight" naming the tensor when quantized tensors do not fit together.
  Matrix linear(const std::string& module) const;
  // A float tensor (norm weights, biases), flattened.
  std::vector<float> vector(const std::string& name) const;

 private:
  const Checkpoint& checkpoint_;
  GemmDevice device_;
  DeclaredPackBits declared_bits_;
  VqDeclaration vq_;  // VQ modules' tiers and codebooks (docs/formats/vq.md)
  const WeightOverrides* overrides_;
};

}  // namespace qs::run
