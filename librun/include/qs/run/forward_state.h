#pragma once
// What flows through the forward pass: the options of a run, the hidden states of a batch and
// the per-layer decode cache.

#include <cstdint>
#include <optional>
#include <vector>

#include "qs/run/linear_observer.h"

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

// What incremental decoding keeps per layer for one sequence.
struct LayerCache {
  std::uint64_t length = 0;
  // Latent attention: the expanded keys and values, [length, heads·(nope + v)].
  // Grouped-query attention: [length, 2·kv_heads·head_dim], the roped keys then the values.
  std::vector<float> keys_values;
  std::vector<float> key_rope;      // latent attention: the roped shared key part [length, rope]
  std::vector<float> indexer_keys;  // DSA indexer: [length, index_head_dim]
};
struct DecodeCache {
  std::vector<LayerCache> layers;
};

}  // namespace qs::run
