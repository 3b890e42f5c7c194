#pragma once
// A minimal, exact forward pass of the MoE families quantsmith reads (glm_moe_dsa,
// deepseek_v3, qwen3_moe; docs/models/) on the CPU in fp32: the family's attention kind, its
// router over the experts (and shared expert where it has one) or a dense MLP, the final norm
// and lm_head, and the MTP draft head where the family has one. The pieces are chosen once
// from the architecture (architecture.h); the forward itself names no family.
//
// The forward advances one decoder layer at a time over a whole batch of equal-length
// sequences (positions 0..seq-1), loading that layer's weights just before and dropping them
// after, so only one layer is ever in memory; evaluation can step two models side by side.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/run/architecture.h"
#include "qs/run/attention.h"
#include "qs/run/forward_state.h"
#include "qs/run/linear_observer.h"
#include "qs/run/weight_loader.h"

namespace qs::run {

class LanguageModel {
 public:
  // Reads the architecture (runner_architecture); throws BadInput (config.*, layout.*) when
  // config.json does not describe a family we run or contradicts the tensors.
  // `overrides` (outliving the model) replace some Linears' weights (weight_loader.h).
  explicit LanguageModel(const Checkpoint& checkpoint, GemmDevice device = GemmDevice::Cpu,
                         const WeightOverrides* overrides = nullptr);
  // The attention piece refers to the architecture held here.
  LanguageModel(const LanguageModel&) = delete;
  LanguageModel& operator=(const LanguageModel&) = delete;

  const RunnerArchitecture& architecture() const { return architecture_; }
  bool has_mtp() const { return architecture_.dimensions.num_nextn_predict_layers > 0; }

  // Token ids [batch·seq] → embeddings. Ids outside the vocabulary throw "run.bad_token".
  HiddenStates embed(std::span<const std::int32_t> tokens, std::uint64_t batch,
                     std::uint64_t seq) const;
  // Decoder layer `layer` (main or MTP) in place. With a cache (batch 1), the rows are the
  // next tokens after the cached ones and are appended to it.
  void run_layer(std::uint64_t layer, HiddenStates& hidden, const RunOptions& options,
                 LayerCache* cache = nullptr) const;
  // model.norm in place.
  void final_norm(HiddenStates& hidden) const;
  // lm_head over the rows: [rows, vocab].
  std::vector<float> logits(const HiddenStates& normed) const;

  struct Output {
    std::vector<float> logits;  // [batch·seq, vocab]
    HiddenStates final_hidden;  // after model.norm
  };
  Output forward(std::span<const std::int32_t> tokens, std::uint64_t batch, std::uint64_t seq,
                 const RunOptions& options = {}) const;

  // Greedy continuation of one prompt with the KV cache: `max_new` tokens (fewer if `stop`
  // is produced). Each step reads the weights again, layer by layer (from the page cache
  // after the first): memory stays one layer plus the cache, speed is that of a checker.
  std::vector<std::int32_t> generate(std::span<const std::int32_t> prompt, std::uint64_t max_new,
                                     std::optional<std::int32_t> stop = std::nullopt,
                                     const RunOptions& options = {}) const;

  // The MTP head at positions 0..seq-2: h_i = final_hidden row i, draft input token t_(i+1)
  // (embedding zeroed at position 0); row i predicts t_(i+2). [batch·(seq−1), vocab].
  // BadInput "run.no_mtp_layer" for a model without one.
  std::vector<float> mtp_logits(const HiddenStates& final_hidden,
                                std::span<const std::int32_t> tokens,
                                const RunOptions& options = {}) const;

 private:
  void feed_forward(std::uint64_t layer, HiddenStates& hidden, const RunOptions& options) const;

  const Checkpoint& checkpoint_;
  WeightLoader weights_;
  RunnerArchitecture architecture_;
  std::unique_ptr<Attention> attention_;
};

}  // namespace qs::run
