// MLA attention with the DSA lightning indexer (docs/models/glm_moe_dsa.md, "MLA attention",
// "DSA indexer"), prefill over a batch of sequences, in fp32.

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "qs/ckpt/core/error.h"
#include "qs/run/glm5_model.h"
#include "qs/run/tensor_ops.h"

namespace qs::run {
namespace {

constexpr float kLatentNormEps = 1e-6f;   // q_a_layernorm, kv_a_layernorm: HF's class default
constexpr float kIndexerNormEps = 1e-6f;  // indexer k_norm (LayerNorm)

std::string prefix(std::uint64_t layer) { return fmt::format("model.layers.{}.", layer); }

// For each query row of each sequence, which keys the indexer lets it attend to; empty when
// every key is allowed (context no longer than index_topk).
// Keys of sequence row `r` live at key_base(r) + t for t < past + seq in the key buffers.
// For each query row, which keys the indexer lets it attend to; empty when every key is
// allowed (context no longer than index_topk). The indexer's keys are cached like the MLA
// keys, so that decode past index_topk selects among all earlier tokens.
std::vector<std::vector<bool>> indexer_selection(
    const WeightLoader& weights, const Glm5Dimensions& d, std::uint64_t layer,
    const HiddenStates& normed, std::span<const float> query_latent, std::uint64_t topk,
    std::uint64_t past, std::vector<float>* cached_keys, LinearObserver* observer) {
  const std::uint64_t seq = normed.seq, rows = normed.batch * seq, context = past + seq;
  if (context <= topk && !cached_keys && !observer) return {};
  const std::string p = prefix(layer) + "self_attn.indexer.";
  const std::uint64_t heads = d.index_n_heads, head_dim = d.index_head_dim;
  const std::uint64_t rope = d.qk_rope_head_dim;
  auto queries =
      observed_linear(weights, observer, p + "wq_b", query_latent, rows);  // [rows, heads·dim]
  auto new_keys = observed_linear(weights, observer, p + "wk", normed.values, rows);  // [rows, dim]
  layer_norm(new_keys, weights.vector(p + "k_norm.weight"), weights.vector(p + "k_norm.bias"),
             kIndexerNormEps);
  auto head_weights = observed_linear(weights, observer, p + "weights_proj", normed.values, rows);
  const float head_scale = 1.0f / std::sqrt(static_cast<float>(heads));
  for (float& weight : head_weights) weight *= head_scale;
  for (std::uint64_t r = 0; r < rows; ++r) {
    const std::uint64_t position = past + r % seq;
    rotate_interleaved(new_keys.data() + r * head_dim, rope, position, d.rope_theta);
    for (std::uint64_t h = 0; h < heads; ++h)
      rotate_interleaved(queries.data() + (r * heads + h) * head_dim, rope, position, d.rope_theta);
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

}  // namespace

void Glm5Model::attention(std::uint64_t layer, HiddenStates& hidden, const RunOptions& options,
                          LayerCache* cache) const {
  const auto& d = dimensions_;
  const std::string p = prefix(layer);
  const std::uint64_t seq = hidden.seq, rows = hidden.batch * seq;
  const std::uint64_t heads = d.num_attention_heads, nope = d.qk_nope_head_dim;
  const std::uint64_t rope = d.qk_rope_head_dim, value_dim = d.v_head_dim;
  const std::uint64_t qk_dim = nope + rope, latent = d.kv_lora_rank;
  if (cache && hidden.batch != 1)
    throw Error(ErrorClass::Internal, "run.cache_batch", "a decode cache holds one sequence");
  const std::uint64_t past = cache ? cache->length : 0, context = past + seq;

  HiddenStates normed = hidden;
  rms_norm(normed.values, weights_.vector(p + "input_layernorm.weight"),
           static_cast<float>(d.rms_norm_eps));
  auto query_latent =
      observed_linear(weights_, options.observer, p + "self_attn.q_a_proj", normed.values, rows);
  rms_norm(query_latent, weights_.vector(p + "self_attn.q_a_layernorm.weight"), kLatentNormEps);
  auto queries =
      observed_linear(weights_, options.observer, p + "self_attn.q_b_proj", query_latent, rows);
  auto compressed = observed_linear(weights_, options.observer, p + "self_attn.kv_a_proj_with_mqa",
                                    normed.values, rows);
  std::vector<float> kv_latent(rows * latent), key_rope(rows * rope);
  for (std::uint64_t r = 0; r < rows; ++r) {
    const float* row = compressed.data() + r * (latent + rope);
    std::copy(row, row + latent, kv_latent.data() + r * latent);
    std::copy(row + latent, row + latent + rope, key_rope.data() + r * rope);
  }
  rms_norm(kv_latent, weights_.vector(p + "self_attn.kv_a_layernorm.weight"), kLatentNormEps);
  auto new_keys_values =
      observed_linear(weights_, options.observer, p + "self_attn.kv_b_proj", kv_latent, rows);
  for (std::uint64_t r = 0; r < rows; ++r) {
    rotate_interleaved(key_rope.data() + r * rope, rope, past + r % seq, d.rope_theta);
    for (std::uint64_t h = 0; h < heads; ++h)
      rotate_interleaved(queries.data() + (r * heads + h) * qk_dim + nope, rope, past + r % seq,
                         d.rope_theta);
  }
  // Keys and values of every visible token: the cache's plus these (or just these).
  std::vector<float> local_keys_values, local_key_rope;
  std::vector<float>& keys_values = cache ? cache->keys_values : local_keys_values;
  std::vector<float>& all_key_rope = cache ? cache->key_rope : local_key_rope;
  keys_values.insert(keys_values.end(), new_keys_values.begin(), new_keys_values.end());
  all_key_rope.insert(all_key_rope.end(), key_rope.begin(), key_rope.end());
  const auto allowed = indexer_selection(weights_, d, layer, normed, query_latent,
                                         options.index_topk.value_or(d.index_topk), past,
                                         cache ? &cache->indexer_keys : nullptr, options.observer);
  if (cache) cache->length = context;

  const float scale = 1.0f / std::sqrt(static_cast<float>(qk_dim));
  std::vector<float> attended(rows * heads * value_dim);
  tbb::parallel_for(std::uint64_t{0}, rows * heads, [&](std::uint64_t task) {
    const std::uint64_t r = task / heads, h = task % heads;
    const std::uint64_t first = (r - r % seq) / seq * context, s = past + r % seq;
    const float* q = queries.data() + (r * heads + h) * qk_dim;
    std::vector<float> weight(s + 1);
    float largest = -std::numeric_limits<float>::infinity();
    for (std::uint64_t t = 0; t <= s; ++t) {
      if (!allowed.empty() && !allowed[r][t]) {
        weight[t] = -std::numeric_limits<float>::infinity();
        continue;
      }
      const float* k_nope = keys_values.data() + ((first + t) * heads + h) * (nope + value_dim);
      const float* k_rope = all_key_rope.data() + (first + t) * rope;
      float dot = 0.0f;
      for (std::uint64_t i = 0; i < nope; ++i) dot += q[i] * k_nope[i];
      for (std::uint64_t i = 0; i < rope; ++i) dot += q[nope + i] * k_rope[i];
      weight[t] = dot * scale;
      largest = std::max(largest, weight[t]);
    }
    float total = 0.0f;
    for (float& w : weight) {
      w = std::exp(w - largest);
      total += w;
    }
    float* out = attended.data() + (r * heads + h) * value_dim;
    for (std::uint64_t t = 0; t <= s; ++t) {
      const float* v = keys_values.data() + ((first + t) * heads + h) * (nope + value_dim) + nope;
      const float p_t = weight[t] / total;
      for (std::uint64_t i = 0; i < value_dim; ++i) out[i] += p_t * v[i];
    }
  });
  const auto projected =
      observed_linear(weights_, options.observer, p + "self_attn.o_proj", attended, rows);
  for (std::size_t i = 0; i < hidden.values.size(); ++i) hidden.values[i] += projected[i];
}

}  // namespace qs::run
