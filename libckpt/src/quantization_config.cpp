#include "qs/ckpt/quantization_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "qs/ckpt/error.h"
#include "qs/ckpt/name_pattern.h"
#include "qs/ckpt/tensor_name.h"

namespace qs {
namespace {

constexpr int kNvfp4GroupSize = 16;

std::string experts_prefix_of(const std::string& module) {
  // model.layers.3.mlp.experts.7.gate_proj → model.layers.3.mlp.experts
  const auto last = module.rfind('.');
  const auto expert = module.rfind('.', last - 1);
  return module.substr(0, expert);
}

std::vector<std::string> modelopt_expert_entries(const std::string& experts_prefix) {
  // vLLM tests FusedMoE prefixes by `prefix in entry` and TRT-LLM fnmatches expert modules:
  // the bare prefix serves the first, the ".*" form the second.
  return {experts_prefix, experts_prefix + ".*"};
}

std::string escape_regex(std::string_view text) {
  std::string escaped;
  for (char c : text) {
    if (c == '.') escaped += '\\';
    escaped += c;
  }
  return escaped;
}

std::vector<std::string> compressed_tensors_expert_entries(const std::string& experts_prefix) {
  return {fmt::format("re:^{}\\.\\d+\\.(gate|up|down)_proj$", escape_regex(experts_prefix))};
}

std::string quant_algo(const QuantizedModel& model) {
  return model.activations_quantized ? "NVFP4" : "W4A16_NVFP4";
}

nlohmann::json nvfp4_modelopt_args() {
  return {{"dynamic", false}, {"num_bits", 4}, {"type", "float"}, {"group_size", kNvfp4GroupSize}};
}

// compressed-tensors QuantizationArgs for NVFP4 weights (CT preset NVFP4A16), without the
// scale_dtype / zp_dtype keys that consumers before CT 0.13 reject (§2.3).
nlohmann::json nvfp4_compressed_tensors_weights() {
  return {{"actorder", nullptr},
          {"block_structure", nullptr},
          {"dynamic", false},
          {"group_size", kNvfp4GroupSize},
          {"num_bits", 4},
          {"observer", "minmax"},
          {"observer_kwargs", nlohmann::json::object()},
          {"strategy", "tensor_group"},
          {"symmetric", true},
          {"type", "float"}};
}

void check_vllm_resolution(const QuantizedModel& model, const nlohmann::json& block) {
  std::vector<std::string> targets;
  for (const auto& [name, group] : block["config_groups"].items())
    for (const auto& target : group["targets"]) targets.push_back(target.get<std::string>());
  std::vector<std::string> ignore = block["ignore"].get<std::vector<std::string>>();
  VllmTargetMatcher matcher(targets, ignore);
  auto check = [&](const std::string& module, VllmDecision expected) {
    const auto parsed = parse_tensor_name(module + ".weight");
    const auto vllm_module = vllm_quantized_module(parsed);
    if (!vllm_module) return;
    const auto resolution = matcher.resolve(*vllm_module);
    if (resolution.decision != expected)
      throw Error(ErrorClass::Internal, "config.vllm_mismatch",
                  fmt::format("vLLM would resolve {} ({}) as {}, but the checkpoint has it {}",
                              vllm_module->name, module, vllm_decision_name(resolution.decision),
                              vllm_decision_name(expected)));
  };
  for (const auto& module : model.nvfp4_modules) check(module, VllmDecision::Targeted);
  for (const auto& module : model.unquantized_linears) check(module, VllmDecision::Ignored);
}

}  // namespace

std::vector<std::string> unquantized_module_entries(
    const QuantizedModel& model, std::vector<std::string> (*expert_entries)(const std::string&)) {
  std::set<std::string> prefixes_with_quantized_experts;
  for (const auto& module : model.nvfp4_modules)
    if (parse_tensor_name(module + ".weight").expert)
      prefixes_with_quantized_experts.insert(experts_prefix_of(module));
  std::vector<std::string> entries;
  std::set<std::string> collapsed;
  for (const auto& module : model.unquantized_linears) {
    const auto parsed = parse_tensor_name(module + ".weight");
    if (category(parsed.role) == TensorCategory::RoutedExpert) {
      const auto prefix = experts_prefix_of(module);
      if (!prefixes_with_quantized_experts.contains(prefix)) {
        if (collapsed.insert(prefix).second)
          for (auto& entry : expert_entries(prefix)) entries.push_back(std::move(entry));
        continue;
      }
    }
    entries.push_back(module);
  }
  return entries;
}

nlohmann::json modelopt_hf_quant_config(const QuantizedModel& model) {
  nlohmann::json quantization;
  quantization["quant_algo"] = quant_algo(model);
  quantization["kv_cache_quant_algo"] =
      model.kv_cache_quant_algo ? nlohmann::json(*model.kv_cache_quant_algo) : nullptr;
  quantization["group_size"] = kNvfp4GroupSize;
  quantization["exclude_modules"] = unquantized_module_entries(model, modelopt_expert_entries);
  return {{"producer", {{"name", "quantsmith"}, {"version", kQuantsmithVersion}}},
          {"quantization", std::move(quantization)}};
}

nlohmann::json modelopt_config_block(const QuantizedModel& model) {
  nlohmann::json group = {{"weights", nvfp4_modelopt_args()}, {"targets", {"Linear"}}};
  if (model.activations_quantized) group["input_activations"] = nvfp4_modelopt_args();
  nlohmann::json block;
  block["config_groups"] = {{"group_0", std::move(group)}};
  block["ignore"] = unquantized_module_entries(model, modelopt_expert_entries);
  block["quant_algo"] = quant_algo(model);
  block["kv_cache_scheme"] =
      model.kv_cache_quant_algo == std::optional<std::string>("FP8")
          ? nlohmann::json{{"dynamic", false}, {"num_bits", 8}, {"type", "float"}}
          : nlohmann::json(nullptr);
  block["producer"] = {{"name", "quantsmith"}, {"version", kQuantsmithVersion}};
  block["quant_method"] = "modelopt";
  // vLLM's nested-form reader wants these three keys; harmless in the flat form.
  block["group_size"] = kNvfp4GroupSize;
  block["kv_cache_quant_algo"] =
      model.kv_cache_quant_algo ? nlohmann::json(*model.kv_cache_quant_algo) : nullptr;
  block["exclude_modules"] = block["ignore"];
  return block;
}

nlohmann::json compressed_tensors_config_block(const QuantizedModel& model) {
  nlohmann::json group;
  group["format"] = "nvfp4-pack-quantized";
  group["input_activations"] = nullptr;
  if (model.activations_quantized) {
    auto activations = nvfp4_compressed_tensors_weights();
    activations["dynamic"] = "local";
    group["input_activations"] = std::move(activations);
  }
  group["output_activations"] = nullptr;
  group["targets"] = {"Linear"};
  group["weights"] = nvfp4_compressed_tensors_weights();
  nlohmann::json block;
  block["config_groups"] = {{"group_0", std::move(group)}};
  block["format"] = "nvfp4-pack-quantized";
  block["global_compression_ratio"] = nullptr;
  block["ignore"] = unquantized_module_entries(model, compressed_tensors_expert_entries);
  block["kv_cache_scheme"] = nullptr;
  block["quant_method"] = "compressed-tensors";
  block["quantization_status"] = "compressed";
  block["sparsity_config"] = nlohmann::json::object();
  block["transform_config"] = nlohmann::json::object();
  block["version"] = "0.12.2";
  check_vllm_resolution(model, block);
  return block;
}

std::string config_with_quantization(const nlohmann::json& config, const nlohmann::json& block) {
  nlohmann::json updated = config.is_object() ? config : nlohmann::json::object();
  updated["quantization_config"] = block;
  return updated.dump(2) + "\n";
}

}  // namespace qs
