#include "qs/run/architecture.h"

#include "qs/ckpt/model/glm5_layout.h"

namespace qs::run {

RunnerArchitecture runner_architecture(const Checkpoint& checkpoint) {
  const auto d = dimensions_from_config(checkpoint.config(),
                                        (checkpoint.directory() / "config.json").string());
  RunnerArchitecture a;
  a.model_type = "glm_moe_dsa";
  a.attention = AttentionKind::LatentWithIndexer;
  a.rotary_pairing = RotaryPairing::Interleaved;
  a.router = {RouterScoring::SigmoidGroupedTopK, d.n_routed_experts, d.num_experts_per_tok,
              d.n_group, d.topk_group, true, d.routed_scaling_factor};
  a.vocab_size = d.vocab_size;
  a.hidden_size = d.hidden_size;
  a.intermediate_size = d.intermediate_size;
  a.moe_intermediate_size = d.moe_intermediate_size;
  a.num_hidden_layers = d.num_hidden_layers;
  a.num_nextn_predict_layers = d.num_nextn_predict_layers;
  a.n_shared_experts = d.n_shared_experts;
  a.rms_norm_eps = d.rms_norm_eps;
  a.rope_theta = d.rope_theta;
  a.num_attention_heads = d.num_attention_heads;
  a.q_lora_rank = d.q_lora_rank;
  a.kv_lora_rank = d.kv_lora_rank;
  a.qk_nope_head_dim = d.qk_nope_head_dim;
  a.qk_rope_head_dim = d.qk_rope_head_dim;
  a.v_head_dim = d.v_head_dim;
  a.index_n_heads = d.index_n_heads;
  a.index_head_dim = d.index_head_dim;
  a.index_topk = d.index_topk;
  for (std::uint64_t layer = 0; layer < d.num_hidden_layers + d.num_nextn_predict_layers; ++layer)
    a.moe_layers.push_back(layer >= d.first_k_dense_replace);
  return a;
}

}  // namespace qs::run
