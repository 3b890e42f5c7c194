#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/formats/fp8_block_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/model/name_pattern.h"
#include "qs/ckpt/model/tensor_name.h"

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
// scale_dtype / zp_dtype keys that consumers before CT 0.13 reject
// (docs/formats/compressed-tensors.md, "Quantization arguments").
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

// compressed-tensors QuantizationArgs for integer weights (docs/formats/compressed-tensors.md,
// "pack-quantized").
nlohmann::json integer_compressed_tensors_weights(const IntegerModules& group) {
  const auto& options = group.options;
  const bool channel = options.group_size == kChannelGroup;
  return {{"actorder", group.gptq && options.act_order && !channel ? nlohmann::json("weight")
                                                                   : nlohmann::json(nullptr)},
          {"block_structure", nullptr},
          {"dynamic", false},
          {"group_size", channel ? nlohmann::json(nullptr) : nlohmann::json(options.group_size)},
          {"num_bits", options.bits},
          {"observer", options.observer},
          {"observer_kwargs", nlohmann::json::object()},
          {"strategy", channel ? "channel" : "group"},
          {"symmetric", options.symmetric},
          {"type", "int"}};
}

// One config group's modules and scheme, before targets are chosen.
struct SchemeGroup {
  std::vector<std::string> modules;
  nlohmann::json scheme;  // format, weights, input/output activations
};

std::vector<std::string> all_quantized_modules(const QuantizedModel& model) {
  std::vector<std::string> modules = model.nvfp4_modules;
  for (const auto& group : model.integer_groups)
    modules.insert(modules.end(), group.modules.begin(), group.modules.end());
  modules.insert(modules.end(), model.fp8_block_modules.begin(), model.fp8_block_modules.end());
  return modules;
}

// The names a module must be matched under: as checkpoints name it (compressed-tensors and
// transformers match those), and as vLLM builds it (fused names; for routed experts, every
// expert's projections, as vLLM consults expert 0's).
std::vector<std::string> matched_names(const std::string& module) {
  const auto parsed = parse_tensor_name(module + ".weight");
  if (parsed.expert) {
    const auto prefix = experts_prefix_of(module);
    const auto projection = module.substr(module.rfind('.') + 1);
    return {escape_regex(prefix) + "\\.\\d+\\." + escape_regex(projection)};
  }
  std::vector<std::string> names{escape_regex(module)};
  if (const auto vllm = vllm_quantized_module(parsed); vllm && vllm->name != module)
    names.push_back(escape_regex(vllm->name));
  return names;
}

// Anchored regexes covering exactly `modules` (and their vLLM names): one per distinct set
// of layers, "re:^model\.layers\.(3|4)\.(self_attn\.q_a_proj|...)$".
std::vector<std::string> regex_targets(const std::vector<std::string>& modules) {
  static const std::string kLayers = "model\\.layers\\.";
  std::map<std::string, std::set<std::string>> layers_of_rest;  // escaped rest → layer numbers
  std::vector<std::string> loose;                               // outside any layer
  for (const auto& module : modules)
    for (const auto& name : matched_names(module)) {
      if (!name.starts_with(kLayers)) {
        loose.push_back("re:^" + name + "$");
        continue;
      }
      const auto dot = name.find("\\.", kLayers.size());
      layers_of_rest[name.substr(dot + 2)].insert(
          name.substr(kLayers.size(), dot - kLayers.size()));
    }
  std::map<std::set<std::string>, std::vector<std::string>> rests_of_layers;
  for (const auto& [rest, layers] : layers_of_rest) rests_of_layers[layers].push_back(rest);
  std::vector<std::string> targets;
  for (const auto& [layers, rests] : rests_of_layers)
    targets.push_back(
        fmt::format("re:^{}({})\\.({})$", kLayers, fmt::join(layers, "|"), fmt::join(rests, "|")));
  std::sort(loose.begin(), loose.end());
  loose.erase(std::unique(loose.begin(), loose.end()), loose.end());
  targets.insert(targets.end(), loose.begin(), loose.end());
  return targets;
}

void check_vllm_resolution(const QuantizedModel& model, const nlohmann::json& block,
                           const std::vector<SchemeGroup>& groups) {
  std::vector<std::string> targets;
  std::vector<std::size_t> group_of_target;
  std::size_t index = 0;
  for (const auto& [name, group] : block["config_groups"].items()) {
    for (const auto& target : group["targets"]) {
      targets.push_back(target.get<std::string>());
      group_of_target.push_back(index);
    }
    ++index;
  }
  std::vector<std::string> ignore = block["ignore"].get<std::vector<std::string>>();
  VllmTargetMatcher matcher(targets, ignore);
  auto check = [&](const std::string& module, VllmDecision expected,
                   std::optional<std::size_t> group) {
    const auto parsed = parse_tensor_name(module + ".weight");
    const auto vllm_module = vllm_quantized_module(parsed);
    if (!vllm_module) return;
    const auto resolution = matcher.resolve(*vllm_module);
    if (resolution.decision != expected)
      throw Error(ErrorClass::Internal, "config.vllm_mismatch",
                  fmt::format("vLLM would resolve {} ({}) as {}, but the checkpoint has it {}",
                              vllm_module->name, module, vllm_decision_name(resolution.decision),
                              vllm_decision_name(expected)));
    std::vector<std::optional<std::size_t>> chosen = resolution.shard_targets;
    chosen.push_back(resolution.target);
    for (const auto& target : chosen)
      if (group && target && group_of_target[*target] != *group)
        throw Error(ErrorClass::Internal, "config.vllm_mismatch",
                    fmt::format("vLLM would give {} ({}) the scheme of config group {}, but it "
                                "is stored in that of group {}",
                                vllm_module->name, module, group_of_target[*target], *group));
  };
  for (std::size_t g = 0; g < groups.size(); ++g)
    for (const auto& module : groups[g].modules) check(module, VllmDecision::Targeted, g);
  for (const auto& module : model.unquantized_linears)
    check(module, VllmDecision::Ignored, std::nullopt);
}

}  // namespace

std::vector<std::string> unquantized_module_entries(
    const QuantizedModel& model, std::vector<std::string> (*expert_entries)(const std::string&)) {
  std::set<std::string> prefixes_with_quantized_experts;
  for (const auto& module : all_quantized_modules(model))
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

nlohmann::json compressed_tensors_config_block(const QuantizedModel& quantized) {
  // compressed-tensors and vLLM's scheme resolution must leave VQ modules alone: they are
  // listed as ignored, and the `vq` entry says what they hold.
  QuantizedModel model = quantized;
  for (const auto& entry : quantized.vq_modules) model.unquantized_linears.push_back(entry.module);
  std::vector<SchemeGroup> groups;
  if (!model.nvfp4_modules.empty()) {
    nlohmann::json scheme;
    scheme["format"] = "nvfp4-pack-quantized";
    scheme["input_activations"] = nullptr;
    if (model.activations_quantized) {
      auto activations = nvfp4_compressed_tensors_weights();
      activations["dynamic"] = "local";
      scheme["input_activations"] = std::move(activations);
    }
    scheme["output_activations"] = nullptr;
    scheme["weights"] = nvfp4_compressed_tensors_weights();
    groups.push_back({model.nvfp4_modules, std::move(scheme)});
  }
  for (const auto& integer : model.integer_groups)
    groups.push_back({integer.modules,
                      {{"format", "pack-quantized"},
                       {"input_activations", nullptr},
                       {"output_activations", nullptr},
                       {"weights", integer_compressed_tensors_weights(integer)}}});
  // The largest group takes the class target "Linear" (vLLM tries names and regexes of every
  // group before class names, so the others' regexes win for their modules).
  std::size_t largest = 0;
  for (std::size_t g = 0; g < groups.size(); ++g)
    if (groups[g].modules.size() > groups[largest].modules.size()) largest = g;
  nlohmann::json config_groups = nlohmann::json::object();
  std::set<std::string> formats;
  for (std::size_t g = 0; g < groups.size(); ++g) {
    nlohmann::json group = groups[g].scheme;
    group["targets"] =
        g == largest ? std::vector<std::string>{"Linear"} : regex_targets(groups[g].modules);
    formats.insert(group["format"].get<std::string>());
    config_groups[fmt::format("group_{}", g)] = std::move(group);
  }
  nlohmann::json block;
  block["config_groups"] = std::move(config_groups);
  block["format"] = formats.empty()       ? std::string("dense")
                    : formats.size() == 1 ? *formats.begin()
                                          : std::string("mixed-precision");
  block["global_compression_ratio"] = nullptr;
  block["ignore"] = unquantized_module_entries(model, compressed_tensors_expert_entries);
  block["kv_cache_scheme"] = nullptr;
  block["quant_method"] = "compressed-tensors";
  block["quantization_status"] = "compressed";
  block["sparsity_config"] = nlohmann::json::object();
  block["transform_config"] = nlohmann::json::object();
  block["version"] = "0.12.2";
  check_vllm_resolution(model, block, groups);
  if (!quantized.vq_modules.empty()) {
    block["vq"] = vq_config_entry(quantized.vq_modules);
    block["extra_config"] = vq_extra_config(quantized.vq_modules);
  }
  return block;
}

std::string config_with_quantization(const nlohmann::json& config, const nlohmann::json& block) {
  nlohmann::json updated = config.is_object() ? config : nlohmann::json::object();
  updated["quantization_config"] = block;
  return updated.dump(2) + "\n";
}

std::size_t quantized_linear_count(const QuantizedModel& model) {
  std::size_t count =
      model.nvfp4_modules.size() + model.fp8_block_modules.size() + model.vq_modules.size();
  for (const auto& group : model.integer_groups) count += group.modules.size();
  return count;
}

std::vector<std::pair<std::string, std::string>> output_config_files(
    const Checkpoint& source, const QuantizedModel& model, std::optional<OutputFormat> format) {
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& path : source.auxiliary_files()) {
    const std::string name = path.filename().string();
    // A source that is itself our output has a job file and a manifest: the new job writes
    // its own.
    if (name == "config.json" || name == kHfQuantConfigFileName || name == kJobFileName ||
        name == kManifestFileName)
      continue;
    files.emplace_back(name, read_text_file(path));
  }
  if (!format || quantized_linear_count(model) == 0) {
    if (source.config().is_object()) {
      nlohmann::json config = source.config();
      config.erase("quantization_config");
      files.emplace_back("config.json", config.dump(2) + "\n");
    }
    return files;
  }
  if (!model.fp8_block_modules.empty()) {
    // The planner never mixes FP8 block-scaled modules with other schemes. A FusedMoE layer
    // whose experts all stay unquantized is listed by its prefix, which vLLM looks up.
    const auto ignored = unquantized_module_entries(
        model, [](const std::string& prefix) { return std::vector<std::string>{prefix}; });
    files.emplace_back("config.json",
                       config_with_quantization(source.config(), fp8_block_config_block(ignored)));
  } else if (*format == OutputFormat::Modelopt) {
    files.emplace_back("config.json",
                       config_with_quantization(source.config(), modelopt_config_block(model)));
    files.emplace_back(std::string(kHfQuantConfigFileName),
                       modelopt_hf_quant_config(model).dump(2) + "\n");
  } else {
    files.emplace_back("config.json", config_with_quantization(
                                          source.config(), compressed_tensors_config_block(model)));
  }
  return files;
}

}  // namespace qs
