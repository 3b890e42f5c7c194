#pragma once
// What the runner needs to know about a checkpoint's architecture: its dimensions and which
// pieces its family is made of (attention kind, router kind, RoPE pairing and scaling, which
// layers are MoE). Built once from the family description; the forward reads only this, so a
// family is a row of choices (architecture.cpp), not a condition inside the forward.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/run/expert_routing.h"
#include "qs/run/rotary_embedding.h"

namespace qs::run {

enum class AttentionKind : std::uint8_t {
  LatentWithIndexer,  // MLA + DSA lightning indexer (glm_moe_dsa)
  Latent,             // MLA, dense causal attention (deepseek_v3)
  GroupedQuery,       // GQA with per-head q/k RMSNorm (qwen3_moe)
};

struct RunnerArchitecture {
  std::string model_type;
  AttentionKind attention = AttentionKind::LatentWithIndexer;
  RotaryPairing rotary_pairing = RotaryPairing::Interleaved;
  std::optional<YarnScaling> yarn;
  RouterSpec router;

  std::uint64_t vocab_size = 0;
  std::uint64_t hidden_size = 0;
  std::uint64_t intermediate_size = 0;      // dense MLP
  std::uint64_t moe_intermediate_size = 0;  // one routed expert
  std::uint64_t num_hidden_layers = 0;
  std::uint64_t num_nextn_predict_layers = 0;  // MTP layers, at indices num_hidden_layers...
  std::uint64_t n_shared_experts = 0;
  bool tie_word_embeddings = false;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;

  std::uint64_t num_attention_heads = 0;
  // Grouped-query attention.
  std::uint64_t num_key_value_heads = 0;
  std::uint64_t head_dim = 0;
  // Multi-head latent attention.
  std::uint64_t q_lora_rank = 0;
  std::uint64_t kv_lora_rank = 0;
  std::uint64_t qk_nope_head_dim = 0;
  std::uint64_t qk_rope_head_dim = 0;
  std::uint64_t v_head_dim = 0;
  // DSA indexer.
  std::uint64_t index_n_heads = 0;
  std::uint64_t index_head_dim = 0;
  std::uint64_t index_topk = 0;

  // Per layer (main and MTP): true where the feed-forward is the routed MoE.
  std::vector<bool> moe_layers;

  bool is_moe_layer(std::uint64_t layer) const {
    return layer < moe_layers.size() && moe_layers[layer];
  }
  std::uint64_t total_layers() const { return num_hidden_layers + num_nextn_predict_layers; }
};

// The architecture of `checkpoint` from its config.json and family. Throws BadInput
// (config.*, layout.*) when the family is unknown or its keys contradict each other.
RunnerArchitecture runner_architecture(const Checkpoint& checkpoint);

}  // namespace qs::run
