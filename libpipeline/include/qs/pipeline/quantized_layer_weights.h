#pragma once
// The quantized weights of the layer being calibrated, as the runner's weight overrides: the
// layer-pipelined job's sequential mode runs layer L again with them, so layer L+1 is
// calibrated on what the quantized model computes. Kept in their stored (packed) form, a
// fraction of the BF16 layer, and decoded to f32 one module at a time when the forward asks,
// through the weight-format registry and libquant's decoder (what the runner does for a
// quantized checkpoint), so the re-run sees exactly what a consumer of the output decodes.

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "qs/ckpt/io/safetensors.h"
#include "qs/run/weight_loader.h"

namespace qs::pipeline {

class QuantizedLayerWeights final : public run::WeightOverrides {
 public:
  // `pack_bits`: the code width of each pack-quantized module (the plan's integer groups; the
  // packing alone cannot tell 7 from 8 bits).
  explicit QuantizedLayerWeights(std::map<std::string, int> pack_bits);

  // One plan item's output tensors; `shapes` gives each source weight's [out, in] by module
  // path. Modules whose tensors are not a quantized format we decode (kept or cast weights)
  // are left to the checkpoint.
  void add(std::span<const TensorSpec> specs, std::span<const std::span<const std::byte>> bytes,
           const std::map<std::string, Shape>& shapes);
  std::optional<run::Matrix> linear(const std::string& module) const override;
  // Forgets the modules of decoder layer `layer` (after its re-run); later layers' items may
  // already have finished.
  void clear(std::uint32_t layer);
  std::uint64_t held_bytes() const;

 private:
  struct Module {
    Shape shape;
    std::vector<TensorInfo> tensors;
    std::vector<std::vector<std::byte>> bytes;
  };
  std::map<std::string, int> pack_bits_;
  mutable std::mutex mutex_;
  std::map<std::string, Module> modules_;
};

}  // namespace qs::pipeline
