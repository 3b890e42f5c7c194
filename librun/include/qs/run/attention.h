#pragma once
// The self-attention kinds of the families, one class each, chosen by the family description's
// AttentionKind (make_attention): latent attention (MLA) with or without the DSA indexer, and
// grouped-query attention with q/k norms.

#include <cstdint>
#include <memory>
#include <vector>

#include "qs/run/architecture.h"
#include "qs/run/forward_state.h"
#include "qs/run/weight_loader.h"

namespace qs::run {

class Attention {
 public:
  virtual ~Attention() = default;
  // Self-attention of decoder layer `layer` over `normed` (the input_layernorm's output):
  // o_proj's output, [rows, hidden]. With a cache (batch 1) the rows follow the cached tokens
  // and are appended to it.
  virtual std::vector<float> forward(std::uint64_t layer, const HiddenStates& normed,
                                     const RunOptions& options, LayerCache* cache) const = 0;
};

std::unique_ptr<Attention> make_attention(const RunnerArchitecture& architecture,
                                          const WeightLoader& weights);

// The kinds (latent_attention.cpp, grouped_query_attention.cpp).
std::unique_ptr<Attention> make_latent_attention(const RunnerArchitecture& architecture,
                                                 const WeightLoader& weights, bool with_indexer);
std::unique_ptr<Attention> make_grouped_query_attention(const RunnerArchitecture& architecture,
                                                        const WeightLoader& weights);

}  // namespace qs::run
