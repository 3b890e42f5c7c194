// Grouped-query attention with per-head q/k RMSNorm before RoPE (Qwen3-MoE,
// docs/models/qwen3_moe.md): num_key_value_heads key/value heads, each shared by
// num_attention_heads / num_key_value_heads query heads; RoPE on the two halves of each head.

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <cmath>

#include "attention_softmax.h"
#include "module_names.h"
#include "qs/run/attention.h"
#include "qs/run/tensor_ops.h"

namespace qs::run {
namespace {

class GroupedQueryAttention final : public Attention {
 public:
  GroupedQueryAttention(const RunnerArchitecture& architecture, const WeightLoader& weights)
      : a_(architecture),
        weights_(weights),
        rotary_(architecture.dimensions.head_dim, architecture.dimensions.rope_theta,
                architecture.rotary_pairing, architecture.yarn),
        scale_(static_cast<float>(
            std::pow(static_cast<double>(architecture.dimensions.head_dim), -0.5))) {}

  std::vector<float> forward(std::uint64_t layer, const HiddenStates& normed,
                             const RunOptions& options, LayerCache* cache) const override {
    const std::uint64_t seq = normed.seq, rows = normed.batch * seq;
    const std::uint64_t heads = a_.dimensions.num_attention_heads,
                        kv_heads = a_.dimensions.num_key_value_heads;
    const std::uint64_t head_dim = a_.dimensions.head_dim, kv_width = kv_heads * head_dim;
    const std::uint64_t past = cache ? cache->length : 0, context = past + seq;
    const float eps = static_cast<float>(a_.dimensions.rms_norm_eps);

    auto queries = observed_linear(weights_, options.observer, module_of(TensorRole::AttnQ, layer),
                                   normed.values, rows);
    auto keys = observed_linear(weights_, options.observer, module_of(TensorRole::AttnK, layer),
                                normed.values, rows);
    const auto values = observed_linear(weights_, options.observer,
                                        module_of(TensorRole::AttnV, layer), normed.values, rows);
    // q_norm / k_norm: RMSNorm over each head's head_dim values.
    rms_norm(queries, weights_.vector(tensor_of(TensorRole::AttnQNorm, layer)), eps);
    rms_norm(keys, weights_.vector(tensor_of(TensorRole::AttnKNorm, layer)), eps);
    for (std::uint64_t r = 0; r < rows; ++r) {
      const std::uint64_t position = past + r % seq;
      for (std::uint64_t h = 0; h < heads; ++h)
        rotary_.rotate(queries.data() + (r * heads + h) * head_dim, position);
      for (std::uint64_t h = 0; h < kv_heads; ++h)
        rotary_.rotate(keys.data() + (r * kv_heads + h) * head_dim, position);
    }
    // Every visible token's keys then values, one row each: the cache's plus these.
    std::vector<float> local_keys_values;
    std::vector<float>& keys_values = cache ? cache->keys_values : local_keys_values;
    for (std::uint64_t r = 0; r < rows; ++r) {
      keys_values.insert(keys_values.end(), keys.begin() + r * kv_width,
                         keys.begin() + (r + 1) * kv_width);
      keys_values.insert(keys_values.end(), values.begin() + r * kv_width,
                         values.begin() + (r + 1) * kv_width);
    }
    if (cache) cache->length = context;

    const std::uint64_t group = heads / kv_heads;
    std::vector<float> attended(rows * heads * head_dim);
    tbb::parallel_for(std::uint64_t{0}, rows * heads, [&](std::uint64_t task) {
      const std::uint64_t r = task / heads, h = task % heads, kv_head = h / group;
      const std::uint64_t first = (r - r % seq) / seq * context, s = past + r % seq;
      const float* q = queries.data() + (r * heads + h) * head_dim;
      const auto token_row = [&](std::uint64_t t) {
        return keys_values.data() + (first + t) * 2 * kv_width;
      };
      std::vector<float> score(s + 1);
      for (std::uint64_t t = 0; t <= s; ++t) {
        const float* k = token_row(t) + kv_head * head_dim;
        float dot = 0.0f;
        for (std::uint64_t i = 0; i < head_dim; ++i) dot += q[i] * k[i];
        score[t] = dot * scale_;
      }
      add_softmax_weighted_values(
          score, [&](std::uint64_t t) { return token_row(t) + kv_width + kv_head * head_dim; },
          head_dim, attended.data() + (r * heads + h) * head_dim);
    });
    return observed_linear(weights_, options.observer, module_of(TensorRole::AttnO, layer),
                           attended, rows);
  }

 private:
  const RunnerArchitecture& a_;
  const WeightLoader& weights_;
  RotaryEmbedding rotary_;
  float scale_;
};

}  // namespace

std::unique_ptr<Attention> make_grouped_query_attention(const RunnerArchitecture& architecture,
                                                        const WeightLoader& weights) {
  return std::make_unique<GroupedQueryAttention>(architecture, weights);
}

}  // namespace qs::run
