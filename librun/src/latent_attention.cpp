// Multi-head latent attention (MLA: DeepSeek-V3, GLM-5), prefill over a batch of sequences or
// decode with a cache, in fp32; optionally with the DSA lightning indexer that lets each query
// attend only to its top-k keys (GLM-5, docs/models/glm_moe_dsa.md). Without the indexer every
// query attends to all earlier keys (DeepSeek-V3, docs/models/deepseek_v3.md).

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "attention_softmax.h"
#include "module_names.h"
#include "qs/ckpt/core/error.h"
#include "qs/run/attention.h"
#include "qs/run/tensor_ops.h"

namespace qs::run {
namespace {

constexpr float kLatentNormEps = 1e-6f;   // q_a_layernorm, kv_a_layernorm: HF's class default
constexpr float kIndexerNormEps = 1e-6f;  // indexer k_norm (LayerNorm)

class LatentAttention final : public Attention {
 public:
  LatentAttention(const RunnerArchitecture& architecture, const WeightLoader& weights,
                  bool with_indexer)
      : a_(architecture),
        weights_(weights),
        with_indexer_(with_indexer),
        rotary_(architecture.dimensions.qk_rope_head_dim, architecture.dimensions.rope_theta,
                architecture.rotary_pairing, architecture.yarn),
        // YaRN scales the softmax of every dimension, rotary or not (DeepSeek's mscale).
        scale_(1.0f /
               std::sqrt(static_cast<float>(architecture.dimensions.qk_nope_head_dim +
                                            architecture.dimensions.qk_rope_head_dim)) *
               static_cast<float>(softmax_scale_factor(architecture.yarn))) {}

  std::vector<float> forward(std::uint64_t layer, const HiddenStates& normed,
                             const RunOptions& options, LayerCache* cache) const override;

 private:
  std::vector<std::vector<bool>> indexer_selection(std::uint64_t layer, const HiddenStates& normed,
                                                   std::span<const float> query_latent,
                                                   std::uint64_t topk, std::uint64_t past,
                                                   std::vector<float>* cached_keys,
                                                   LinearObserver* observer) const;

  const RunnerArchitecture& a_;
  const WeightLoader& weights_;
  bool with_indexer_;
  RotaryEmbedding rotary_;
  float scale_;
};

// For each query row, which keys the indexer lets it attend to; empty when every key is
// allowed (context no longer than index_topk). The indexer's keys are cached like the MLA
// keys, so that decode past index_topk selects among all earlier tokens.
// Keys of sequence row `r` live at key_base(r) + t for t < past + seq in the key buffers.
std::vector<std::vector<bool>> LatentAttention::indexer_selection(
    std::uint64_t layer, const HiddenStates& normed, std::span<const float> query_latent,
    std::uint64_t topk, std::uint64_t past, std::vector<float>* cached_keys,
    LinearObserver* observer) const {
  const std::uint64_t seq = normed.seq, rows = normed.batch * seq, context = past + seq;
  if (context <= topk && !cached_keys && !observer) return {};
  const std::uint64_t heads = a_.dimensions.index_n_heads, head_dim = a_.dimensions.index_head_dim;
  auto queries = observed_linear(weights_, observer, module_of(TensorRole::IndexerWqB, layer),
                                 query_latent, rows);  // [rows, heads·dim]
  auto new_keys = observed_linear(weights_, observer, module_of(TensorRole::IndexerWk, layer),
                                  normed.values, rows);  // [rows, dim]
  layer_norm(new_keys, weights_.vector(tensor_of(TensorRole::IndexerKNorm, layer)),
             weights_.vector(tensor_of(TensorRole::IndexerKNorm, layer, TensorParameter::Bias)),
             kIndexerNormEps);
  auto head_weights = observed_linear(
      weights_, observer, module_of(TensorRole::IndexerWeightsProj, layer), normed.values, rows);
  const float head_scale = 1.0f / std::sqrt(static_cast<float>(heads));
  for (float& weight : head_weights) weight *= head_scale;
  for (std::uint64_t r = 0; r < rows; ++r) {
    const std::uint64_t position = past + r % seq;
    rotary_.rotate(new_keys.data() + r * head_dim, position);
    for (std::uint64_t h = 0; h < heads; ++h)
      rotary_.rotate(queries.data() + (r * heads + h) * head_dim, position);
  }
  // With a cache (one sequence) the keys are the cached ones plus these; without, these.
  std::vector<float> local_keys;
  std::vector<float>& keys = cached_keys ? *cached_keys : local_keys;
  keys.insert(keys.end(), new_keys.begin(), new_keys.end());
  if (context <= topk) return {};
  const float dot_scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<std::vector<bool>> allowed(rows);
  tbb::parallel_for(std::uint64_t{0}, rows, [&](std::uint64_t r) {
    const std::uint64_t first = (r - r % seq) / seq * context, s = past + r % seq;
    std::vector<float> score(context);
    for (std::uint64_t t = 0; t < context; ++t) {
      float total = 0.0f;
      for (std::uint64_t h = 0; h < heads; ++h) {
        const float* q = queries.data() + (r * heads + h) * head_dim;
        const float* k = keys.data() + (first + t) * head_dim;
        float dot = 0.0f;
        for (std::uint64_t i = 0; i < head_dim; ++i) dot += q[i] * k[i];
        total += head_weights[r * heads + h] * std::max(dot * dot_scale, 0.0f);
      }
      score[t] = t <= s ? total : -std::numeric_limits<float>::infinity();
    }
    // Top-k over every key, masked ones included (they stay excluded by the causal mask);
    // ties go to the earlier key.
    std::vector<std::uint64_t> order(context);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::uint64_t a, std::uint64_t b) { return score[a] > score[b]; });
    allowed[r].assign(context, false);
    for (std::uint64_t k = 0; k < topk; ++k) allowed[r][order[k]] = true;
  });
  return allowed;
}

std::vector<float> LatentAttention::forward(std::uint64_t layer, const HiddenStates& normed,
                                            const RunOptions& options, LayerCache* cache) const {
  const std::uint64_t seq = normed.seq, rows = normed.batch * seq;
  const std::uint64_t heads = a_.dimensions.num_attention_heads,
                      nope = a_.dimensions.qk_nope_head_dim;
  const std::uint64_t rope = a_.dimensions.qk_rope_head_dim, value_dim = a_.dimensions.v_head_dim;
  const std::uint64_t qk_dim = nope + rope, latent = a_.dimensions.kv_lora_rank;
  const std::uint64_t past = cache ? cache->length : 0, context = past + seq;

  auto query_latent = observed_linear(weights_, options.observer,
                                      module_of(TensorRole::AttnQA, layer), normed.values, rows);
  rms_norm(query_latent, weights_.vector(tensor_of(TensorRole::AttnQANorm, layer)), kLatentNormEps);
  auto queries = observed_linear(weights_, options.observer, module_of(TensorRole::AttnQB, layer),
                                 query_latent, rows);
  auto compressed = observed_linear(weights_, options.observer,
                                    module_of(TensorRole::AttnKvA, layer), normed.values, rows);
  std::vector<float> kv_latent(rows * latent), key_rope(rows * rope);
  for (std::uint64_t r = 0; r < rows; ++r) {
    const float* row = compressed.data() + r * (latent + rope);
    std::copy(row, row + latent, kv_latent.data() + r * latent);
    std::copy(row + latent, row + latent + rope, key_rope.data() + r * rope);
  }
  rms_norm(kv_latent, weights_.vector(tensor_of(TensorRole::AttnKvANorm, layer)), kLatentNormEps);
  auto new_keys_values = observed_linear(weights_, options.observer,
                                         module_of(TensorRole::AttnKvB, layer), kv_latent, rows);
  for (std::uint64_t r = 0; r < rows; ++r) {
    rotary_.rotate(key_rope.data() + r * rope, past + r % seq);
    for (std::uint64_t h = 0; h < heads; ++h)
      rotary_.rotate(queries.data() + (r * heads + h) * qk_dim + nope, past + r % seq);
  }
  // Keys and values of every visible token: the cache's plus these (or just these).
  std::vector<float> local_keys_values, local_key_rope;
  std::vector<float>& keys_values = cache ? cache->keys_values : local_keys_values;
  std::vector<float>& all_key_rope = cache ? cache->key_rope : local_key_rope;
  keys_values.insert(keys_values.end(), new_keys_values.begin(), new_keys_values.end());
  all_key_rope.insert(all_key_rope.end(), key_rope.begin(), key_rope.end());
  const auto allowed =
      with_indexer_ ? indexer_selection(layer, normed, query_latent,
                                        options.index_topk.value_or(a_.dimensions.index_topk), past,
                                        cache ? &cache->indexer_keys : nullptr, options.observer)
                    : std::vector<std::vector<bool>>{};
  if (cache) cache->length = context;

  std::vector<float> attended(rows * heads * value_dim);
  tbb::parallel_for(std::uint64_t{0}, rows * heads, [&](std::uint64_t task) {
    const std::uint64_t r = task / heads, h = task % heads;
    const std::uint64_t first = (r - r % seq) / seq * context, s = past + r % seq;
    const float* q = queries.data() + (r * heads + h) * qk_dim;
    const auto key_value_row = [&](std::uint64_t t) {
      return keys_values.data() + ((first + t) * heads + h) * (nope + value_dim);
    };
    std::vector<float> score(s + 1);
    for (std::uint64_t t = 0; t <= s; ++t) {
      if (!allowed.empty() && !allowed[r][t]) {
        score[t] = -std::numeric_limits<float>::infinity();
        continue;
      }
      const float* k_nope = key_value_row(t);
      const float* k_rope = all_key_rope.data() + (first + t) * rope;
      float dot = 0.0f;
      for (std::uint64_t i = 0; i < nope; ++i) dot += q[i] * k_nope[i];
      for (std::uint64_t i = 0; i < rope; ++i) dot += q[nope + i] * k_rope[i];
      score[t] = dot * scale_;
    }
    add_softmax_weighted_values(
        score, [&](std::uint64_t t) { return key_value_row(t) + nope; }, value_dim,
        attended.data() + (r * heads + h) * value_dim);
  });
  return observed_linear(weights_, options.observer, module_of(TensorRole::AttnO, layer), attended,
                         rows);
}

}  // namespace

std::unique_ptr<Attention> make_latent_attention(const RunnerArchitecture& architecture,
                                                 const WeightLoader& weights, bool with_indexer) {
  return std::make_unique<LatentAttention>(architecture, weights, with_indexer);
}

}  // namespace qs::run
