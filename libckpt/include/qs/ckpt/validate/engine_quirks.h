#pragma once
// Known engine incompatibilities of checkpoints that are valid by the format: one table, one
// row per quirk (engine, versions, hardware, a condition on the config group a module
// resolves to and on the kind of module the engine builds, what goes wrong, the workaround).
// `validate` reports every row that applies as a warning (the exit code is unchanged: the
// checkpoint is right, the engine is the problem). Add a quirk by adding a row to
// engine_quirks.cpp.

#include <string>
#include <string_view>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/formats/compressed_tensors_config.h"

namespace qs {

// One module as an engine builds it, with the config group it resolves to.
struct QuirkSubject {
  std::string unit;        // vLLM's module name: model.layers.4.mlp.experts, ...fused_qkv_a_proj
  bool fused_moe = false;  // a layer's routed experts (vLLM FusedMoE)
  const ConfigGroupArguments* group = nullptr;  // compressed-tensors group vLLM resolves to
};

struct EngineQuirk {
  std::string_view id;        // stable: the finding kind is "engine.<id>"
  std::string_view engine;    // "vLLM"
  std::string_view versions;  // where it was seen: "0.33, 0.34"
  std::string_view hardware;  // "Hopper (sm_90)", or "any"
  bool (*applies)(const QuirkSubject&);
  std::string_view problem;
  std::string_view workaround;
};

const std::vector<EngineQuirk>& engine_quirks();

// Every quirk that applies to some subject, with the units it applies to (in subject order).
struct QuirkHit {
  const EngineQuirk* quirk = nullptr;
  std::vector<std::string> units;
  std::string group;  // the first unit's config group name

  // "vLLM 0.33, 0.34 on Hopper (sm_90): <problem> (N modules, e.g. X, config group G);
  // workaround: <workaround>"
  std::string message() const;
};
std::vector<QuirkHit> evaluate_engine_quirks(const std::vector<QuirkSubject>& subjects);

// The subjects of a checkpoint's Linears and FusedMoEs (one per vLLM module) resolved, as vLLM
// resolves them, against `config` (the checkpoint's own, or for a draft its target's).
// Modules vLLM leaves unquantized or cannot resolve are left out. `config` must outlive them.
std::vector<QuirkSubject> quirk_subjects(const Checkpoint& checkpoint,
                                         const CompressedTensorsConfig& config);

}  // namespace qs
