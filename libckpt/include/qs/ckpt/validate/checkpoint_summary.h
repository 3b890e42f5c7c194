#pragma once
// What is in a checkpoint, from its headers and config alone (no tensor data read): tensors
// and bytes by category and by dtype, layers, MTP layers, routed experts per layer, the
// detected and declared quantization, and per quantization-config group the Linears it
// resolves. `quantsmith inspect` prints it; checkpoint_summary_json is its `--json` form.

#include <cstdint>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/formats/vq_declaration.h"
#include "qs/ckpt/io/checkpoint.h"

namespace qs {

struct TensorTally {
  std::uint64_t tensors = 0;
  std::uint64_t bytes = 0;
  std::set<std::string> dtypes;

  void add(const TensorInfo& info);
};

// One row of the per-config-group table: the Linears a quantization config resolves to a
// group (or to ignore), with their tensors and bytes, companions included.
struct ConfigGroupRow {
  std::string name;
  std::string scheme;
  std::string format;
  std::uint64_t modules = 0;
  std::uint64_t tensors = 0;
  std::uint64_t bytes = 0;
  std::set<std::string> dtypes;  // of the weights (the ignored row is labelled with them)

  void add(const ModuleParameters& parameters);
};

struct CheckpointSummary {
  std::map<std::string, TensorTally> by_category;
  std::map<std::string, TensorTally> by_dtype;
  std::set<int> layers;
  std::set<int> mtp_layers;
  std::map<int, std::set<int>> experts_by_layer;
  QuantizationDetection quantization;
  // One row per config group (compressed-tensors), or one for modelopt's NVFP4 Linears, then
  // the ignored (excluded) Linears and, if any, the unmatched ones. Empty without a
  // quantization config, or when it cannot be read (validate says why).
  std::vector<ConfigGroupRow> config_groups;
  // VQ modules per tier and layer, and the codebooks (docs/formats/vq.md); nullopt when the
  // checkpoint stores and declares none. `vq_config_error`: why quantization_config.vq could
  // not be read (the modules then count as undeclared).
  std::optional<VqUsage> vq;
  std::string vq_config_error;
};

CheckpointSummary summarize_checkpoint(const Checkpoint& checkpoint);

// The architecture keys a user checks first, in a fixed order; absent keys are left out.
nlohmann::ordered_json config_summary(const nlohmann::json& config);

// `inspect --json`: the checkpoint's totals, then the summary.
nlohmann::ordered_json checkpoint_summary_json(const Checkpoint& checkpoint,
                                               const CheckpointSummary& summary);

}  // namespace qs
