#include "qs/run/attention.h"

namespace qs::run {

// The family description says which attention a layer has; the DSA indexer is part of the
// latent kind where the family has one (glm_moe_dsa).
std::unique_ptr<Attention> make_attention(const RunnerArchitecture& architecture,
                                          const WeightLoader& weights) {
  switch (architecture.family->attention) {
    case AttentionKind::Mla:
      return make_latent_attention(architecture, weights, architecture.dimensions.has_indexer);
    case AttentionKind::Gqa:
      return make_grouped_query_attention(architecture, weights);
  }
  return nullptr;
}

}  // namespace qs::run
