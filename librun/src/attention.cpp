#include "qs/run/attention.h"

namespace qs::run {

std::unique_ptr<Attention> make_attention(const RunnerArchitecture& architecture,
                                          const WeightLoader& weights) {
  switch (architecture.attention) {
    case AttentionKind::LatentWithIndexer:
      return make_latent_attention(architecture, weights, /*with_indexer=*/true);
    case AttentionKind::Latent:
      return make_latent_attention(architecture, weights, /*with_indexer=*/false);
    case AttentionKind::GroupedQuery:
      return make_grouped_query_attention(architecture, weights);
  }
  return nullptr;
}

}  // namespace qs::run
