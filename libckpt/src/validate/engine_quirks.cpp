#include "qs/ckpt/validate/engine_quirks.h"

#include <fmt/format.h>

#include <set>

#include "qs/ckpt/model/name_pattern.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {
namespace {

bool weight_only_pack_quantized(const ConfigGroupArguments& group) {
  return group.type == "int" && group.format == "pack-quantized" && !group.activations_quantized;
}

// vLLM's CompressedTensorsWNA16MoEMethod asks its backend oracle for a kernel; on Hopper the
// oracle picks a non-Marlin kernel that asserts `weight_quant.strategy == "group"` ("channelwise
// is not supported by this kernel",
// vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors_moe/
// compressed_tensors_moe_wna16.py). Marlin takes channel-wise scales.
bool channel_wise_wna16_routed_experts(const QuirkSubject& subject) {
  return subject.fused_moe && subject.group && weight_only_pack_quantized(*subject.group) &&
         subject.group->strategy == "channel";
}

const std::vector<EngineQuirk> kEngineQuirks = {
    {"vllm_wna16_moe_channel_hopper", "vLLM", "0.33, 0.34", "Hopper (sm_90)",
     channel_wise_wna16_routed_experts,
     "routed experts in a channel-wise weight-only integer scheme (compressed-tensors WNA16): "
     "the MoE kernel vLLM picks there asserts group strategy and the model fails to build",
     "serve with --moe-backend marlin (or quantize the routed experts with a group size)"},
};

}  // namespace

const std::vector<EngineQuirk>& engine_quirks() { return kEngineQuirks; }

std::string QuirkHit::message() const {
  return fmt::format("{} {} on {}: {} ({} module(s), e.g. {}, config group {}); workaround: {}",
                     quirk->engine, quirk->versions, quirk->hardware, quirk->problem, units.size(),
                     units.front(), group, quirk->workaround);
}

std::vector<QuirkHit> evaluate_engine_quirks(const std::vector<QuirkSubject>& subjects) {
  std::vector<QuirkHit> hits;
  for (const auto& quirk : kEngineQuirks) {
    QuirkHit hit;
    hit.quirk = &quirk;
    for (const auto& subject : subjects)
      if (quirk.applies(subject)) {
        if (hit.units.empty() && subject.group) hit.group = subject.group->name;
        hit.units.push_back(subject.unit);
      }
    if (!hit.units.empty()) hits.push_back(std::move(hit));
  }
  return hits;
}

std::vector<QuirkSubject> quirk_subjects(const Checkpoint& checkpoint,
                                         const CompressedTensorsConfig& config) {
  const VllmTargets targets = vllm_targets(config);
  std::vector<QuirkSubject> subjects;
  std::set<std::string> seen;
  for (const auto& [path, parameters] : modules_of(checkpoint)) {
    if (!is_config_accountable(parameters)) continue;
    const auto vllm = vllm_quantized_module(parse_tensor_name(path + ".weight"));
    if (!vllm || !seen.insert(vllm->name).second) continue;
    const auto resolution = targets.matcher.resolve(*vllm);
    if (resolution.decision != VllmDecision::Targeted) continue;
    subjects.push_back(
        {vllm->name, vllm->fused_moe, &config.groups[targets.group_of_target[*resolution.target]]});
  }
  return subjects;
}

}  // namespace qs
