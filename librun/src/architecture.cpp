#include "qs/run/architecture.h"

#include "qs/ckpt/model/glm5_layout.h"

namespace qs::run {
namespace {
// TEMPORARY until the families branch's config reader is merged.
std::uint64_t u(const nlohmann::json& c, const char* key, std::uint64_t fallback = 0) {
  return c.contains(key) && c[key].is_number_integer() ? c[key].get<std::uint64_t>() : fallback;
}
double f(const nlohmann::json& c, const char* key, double fallback) {
  return c.contains(key) && c[key].is_number() ? c[key].get<double>() : fallback;
}
}  // namespace

RunnerArchitecture runner_architecture(const Checkpoint& checkpoint) {
  const auto& c = checkpoint.config();
  const std::string type = c.value("model_type", "");
  RunnerArchitecture a;
  a.model_type = type;
  if (type == "glm_moe_dsa") {
    const auto d = dimensions_from_config(c, (checkpoint.directory() / "config.json").string());
    (void)d;
  }
  a.vocab_size = u(c, "vocab_size");
  a.hidden_size = u(c, "hidden_size");
  a.intermediate_size = u(c, "intermediate_size");
  a.moe_intermediate_size = u(c, "moe_intermediate_size");
  a.num_hidden_layers = u(c, "num_hidden_layers");
  a.num_nextn_predict_layers = u(c, "num_nextn_predict_layers");
  a.n_shared_experts = u(c, "n_shared_experts");
  a.rms_norm_eps = f(c, "rms_norm_eps", 1e-6);
  a.rope_theta = f(c, "rope_theta", 10000);
  a.num_attention_heads = u(c, "num_attention_heads");
  a.num_key_value_heads = u(c, "num_key_value_heads");
  a.head_dim = u(c, "head_dim");
  a.q_lora_rank = u(c, "q_lora_rank");
  a.kv_lora_rank = u(c, "kv_lora_rank");
  a.qk_nope_head_dim = u(c, "qk_nope_head_dim");
  a.qk_rope_head_dim = u(c, "qk_rope_head_dim");
  a.v_head_dim = u(c, "v_head_dim");
  a.index_n_heads = u(c, "index_n_heads");
  a.index_head_dim = u(c, "index_head_dim");
  a.index_topk = u(c, "index_topk");
  const std::uint64_t experts =
      type == "qwen3_moe" ? u(c, "num_experts") : u(c, "n_routed_experts");
  a.router = {type == "qwen3_moe" ? RouterScoring::SoftmaxTopK : RouterScoring::SigmoidGroupedTopK,
              experts,
              u(c, "num_experts_per_tok"),
              u(c, "n_group", 1),
              u(c, "topk_group", 1),
              c.value("norm_topk_prob", true),
              f(c, "routed_scaling_factor", 1.0)};
  if (type == "glm_moe_dsa") a.attention = AttentionKind::LatentWithIndexer;
  if (type == "deepseek_v3") a.attention = AttentionKind::Latent;
  if (type == "qwen3_moe") {
    a.attention = AttentionKind::GroupedQuery;
    a.rotary_pairing = RotaryPairing::Halves;
  }
  if (c.contains("rope_scaling") && c["rope_scaling"].is_object()) {
    const auto& r = c["rope_scaling"];
    YarnScaling y;
    y.factor = f(r, "factor", 1);
    y.original_max_position_embeddings = f(r, "original_max_position_embeddings", 0);
    y.beta_fast = f(r, "beta_fast", 32);
    y.beta_slow = f(r, "beta_slow", 1);
    y.mscale = f(r, "mscale", 0);
    y.mscale_all_dim = f(r, "mscale_all_dim", 0);
    a.yarn = y;
  }
  for (std::uint64_t layer = 0; layer < a.num_hidden_layers + a.num_nextn_predict_layers; ++layer)
    a.moe_layers.push_back(type == "qwen3_moe" ? true : layer >= u(c, "first_k_dense_replace"));
  return a;
}

}  // namespace qs::run
