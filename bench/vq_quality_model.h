#pragma once
// What the VQ quality study (vq_quality.cpp) quantizes: the bundled model's routed experts (and,
// for the INT4-spine rows, its spine Linears) held in memory as f32 with their calibration
// Hessians, shared codebooks fitted over all of them, and the fake-quantized weights handed to
// the runner as WeightOverrides, so each configuration is evaluated without writing a checkpoint.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/plan/calibration_store.h"
#include "qs/quant/gptq.h"
#include "qs/quant/vq.h"
#include "qs/run/weight_loader.h"

namespace qs::bench {

enum class Projection : std::uint8_t { Gate, Up, Down, Spine };

struct StudyModule {
  std::string name;  // model.layers.1.mlp.experts.3.gate_proj
  Projection projection = Projection::Spine;
  std::uint32_t layer = 0;
  std::uint32_t expert = 0;
  std::uint64_t rows = 0, cols = 0;
  std::vector<float> weight;  // [rows, cols], the BF16 source as f32
  double frequency = 1.0;     // how often the router picks the expert, relative to the mean
};

// Every routed expert Linear of the decoder layers (the MTP layer stays BF16, as in the seed
// recipes), or the spine Linears (attention projections, dense MLP, shared experts).
std::vector<StudyModule> routed_experts(const Checkpoint& checkpoint,
                                        const CalibrationStore& statistics);
std::vector<StudyModule> spine_linears(const Checkpoint& checkpoint);

// Prepared Hessians, one per statistics matrix and act-order block (all experts' gate/up of a
// layer share one matrix under all-experts statistics, so one factorization per layer).
class HessianBank {
 public:
  explicit HessianBank(const CalibrationStore& statistics) : statistics_(statistics) {}
  // nullptr when the module has no statistics.
  const gptq::PreparedHessian* prepared(const std::string& module, std::uint32_t order_block);
  const std::vector<double>& moments(const std::string& module);
  // diag(H) / mean diag(H): the per-column weights of k-means and codebook refinement.
  std::vector<float> column_weights(const std::string& module);

 private:
  std::string holder(const std::string& module) const;
  const CalibrationStore& statistics_;
  std::map<std::pair<std::string, std::uint32_t>, std::unique_ptr<gptq::PreparedHessian>> prepared_;
  std::map<std::string, std::vector<double>> moments_;
};

// A tier's shared codebook fitted over all modules: `vectors` scale-normalised sub-vectors
// (whole rows, a seeded sample of each module's rows), k-means weights diag(H) normalised per
// module. Uniform (scalar) tiers return uniform_codebook.
vq::Codebook shared_codebook(const vq::Tier& tier, const std::vector<StudyModule>& modules,
                             HessianBank& hessians, std::uint64_t vectors, vq::Backend backend);

// Decoded weights standing in for the checkpoint's.
class DecodedWeights final : public run::WeightOverrides {
 public:
  void set(const StudyModule& module, std::vector<float> decoded);
  void merge(const DecodedWeights& other);
  std::optional<run::Matrix> linear(const std::string& module) const override;

 private:
  struct Entry {
    std::uint64_t rows = 0, cols = 0;
    std::vector<float> values;
  };
  std::map<std::string, Entry> entries_;
};

}  // namespace qs::bench
