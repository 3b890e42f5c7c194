#pragma once
// A minimal, exact GLM-MoE-DSA forward pass (docs/models/glm_moe_dsa.md, "Forward pass") on
// the CPU in fp32: MLA with interleaved RoPE, the DSA lightning indexer's top-k key selection,
// the sigmoid-routed MoE with shared expert, the final norm and lm_head, and the MTP draft head.
//
// The forward advances one decoder layer at a time over a whole batch of equal-length
// sequences (positions 0..seq-1), loading that layer's weights just before and dropping them
// after, so only one layer is ever in memory; evaluation can step two models side by side.

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/model/glm5_layout.h"
#include "qs/run/linear_observer.h"
#include "qs/run/weight_loader.h"

namespace qs::run {

struct RunOptions {
  // Overrides config.json's index_topk in every layer (the reference's logits_topk16).
  std::optional<std::uint64_t> index_topk;
  // Sees every Linear's inputs (calibration); the indexer then always runs.
  LinearObserver* observer = nullptr;
  // Calibration: also route every token through every expert for the observer, while the
  // layer output still uses the real top-k (llm-compressor's calibrate-all-experts).
  bool all_experts = false;
};

// Hidden states of `batch` sequences of `seq` tokens: [batch·seq, hidden], row-major.
struct HiddenStates {
  std::uint64_t batch = 0;
  std::uint64_t seq = 0;
  std::vector<float> values;
};

// What incremental decoding keeps per layer for one sequence: the expanded MLA keys and values,
// the roped shared key part, and the indexer's keys.
struct LayerCache {
  std::uint64_t length = 0;
  std::vector<float> keys_values;   // [length, heads·(nope + v)]
  std::vector<float> key_rope;      // [length, rope]
  std::vector<float> indexer_keys;  // [length, index_head_dim]
};
struct DecodeCache {
  std::vector<LayerCache> layers;
};

class Glm5Model {
 public:
  // Reads config.json; throws BadInput (config.* kinds) when it does not describe GLM-5.
  explicit Glm5Model(const Checkpoint& checkpoint, GemmDevice device = GemmDevice::Cpu);

  const Glm5Dimensions& dimensions() const { return dimensions_; }

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
  std::vector<float> mtp_logits(const HiddenStates& final_hidden,
                                std::span<const std::int32_t> tokens,
                                const RunOptions& options = {}) const;

 private:
  void attention(std::uint64_t layer, HiddenStates& hidden, const RunOptions& options,
                 LayerCache* cache) const;
  void feed_forward(std::uint64_t layer, HiddenStates& hidden, const RunOptions& options) const;

  const Checkpoint& checkpoint_;
  WeightLoader weights_;
  Glm5Dimensions dimensions_;
};

}  // namespace qs::run
