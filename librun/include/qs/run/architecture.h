#pragma once
// What the runner builds a model from: the family description and config reader's dimensions
// (qs/ckpt/model/model_family.h, one place for the facts), and the choices derived from them
// once: the rotary pairing and YaRN scaling, and the router's spec. The attention piece comes
// from the family's AttentionKind (attention.h); the forward names no family.

#include <optional>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/model/model_family.h"
#include "qs/run/expert_routing.h"
#include "qs/run/rotary_embedding.h"

namespace qs::run {

struct RunnerArchitecture {
  const ModelFamily* family = nullptr;
  ModelDimensions dimensions;
  RotaryPairing rotary_pairing = RotaryPairing::Interleaved;
  std::optional<YarnScaling> yarn;
  RouterSpec router;
};

// The architecture of `checkpoint` from its config.json. Throws BadInput from the family's
// config reader (config.unknown_family, config.*, layout.invalid_dimensions) and
// "run.unsupported_rope_scaling" for a rope_scaling type other than yarn.
RunnerArchitecture runner_architecture(const Checkpoint& checkpoint);

}  // namespace qs::run
