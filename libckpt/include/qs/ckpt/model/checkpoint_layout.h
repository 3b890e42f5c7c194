#pragma once
// A checkpoint's tensors as a function of its family and dimensions: every tensor's name,
// shape and dtype in the order of the released checkpoints, and the config.json that
// describes them. `synth` generates this layout; `validate` checks real checkpoints against
// it. Names come from the role grammar (tensor_name.h), the blocks from the family
// (model_family.h); docs/models/ describes each family.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "qs/ckpt/io/safetensors.h"
#include "qs/ckpt/model/model_family.h"

namespace qs {

// What a tensor holds, which decides how synth fills it and what quantizers may target.
enum class TensorKind {
  Linear,      // nn.Linear weight [out, in]
  Embedding,   // token embedding rows
  NormWeight,  // RMSNorm / LayerNorm gain
  NormBias,    // LayerNorm shift
  RouterBias,  // e_score_correction_bias, F32
};

struct LayoutTensor {
  TensorSpec spec;
  TensorKind kind;
  TensorRole role;
};

// Every tensor in checkpoint order: embed_tokens, layers 0.. (MTP layers last), norm, lm_head;
// within a layer the order of the released checkpoints. Checks validate_dimensions first.
std::vector<LayoutTensor> checkpoint_layout(const ModelDimensions& dimensions);
std::vector<TensorSpec> tensor_specs(const ModelDimensions& dimensions);
std::uint64_t total_tensor_bytes(const ModelDimensions& dimensions);

// The special token ids as written to the configs: out-of-vocabulary ids map, in increasing
// order, onto the last ids of the vocabulary (keeping equal ids equal).
struct SpecialTokenIds {
  std::optional<std::uint64_t> bos;
  std::vector<std::uint64_t> eos;
  std::optional<std::uint64_t> pad;
};
SpecialTokenIds special_token_ids(const ModelDimensions& dimensions);

// config.json with the family's real keys in the real order (GLM-5's, DeepSeek-V3's or
// Qwen3-MoE's released config.json), which dimensions_from_config reads back unchanged.
nlohmann::ordered_json config_json(const ModelDimensions& dimensions);
nlohmann::ordered_json generation_config_json(const ModelDimensions& dimensions);

}  // namespace qs
