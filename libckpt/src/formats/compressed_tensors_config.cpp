#include "qs/ckpt/formats/compressed_tensors_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/core/json_input.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {
namespace {

std::optional<ConfigGroupArguments> read_config_group(const std::string& name,
                                                      const nlohmann::json& group,
                                                      const std::string& top_format) {
  // A preset list ("W4A16": ["Linear"]) names no arguments; vLLM cannot read it either.
  if (!group.is_object()) return std::nullopt;
  ConfigGroupArguments parsed;
  parsed.name = name;
  parsed.format = top_format;
  if (const auto format = group.find("format"); format != group.end() && format->is_string())
    parsed.format = format->get<std::string>();
  for (const auto& target : group.value("targets", nlohmann::json::array()))
    parsed.targets.push_back(
        NamePattern::parse(target.get<std::string>(), PlainPatternMeaning::ExactName));
  const auto activations = group.find("input_activations");
  parsed.activations_quantized = activations != group.end() && activations->is_object();
  const auto weights = group.find("weights");
  if (weights == group.end() || !weights->is_object()) return parsed;
  auto key = [&](const char* field) -> const nlohmann::json* {
    const auto found = weights->find(field);
    return found == weights->end() || found->is_null() ? nullptr : &*found;
  };
  parsed.type = key("type") ? key("type")->get<std::string>() : "int";
  if (key("num_bits")) parsed.bits = key("num_bits")->get<int>();
  if (key("symmetric")) parsed.symmetric = key("symmetric")->get<bool>();
  if (key("group_size")) parsed.group_size = key("group_size")->get<std::int64_t>();
  if (key("strategy"))
    parsed.strategy = key("strategy")->get<std::string>();
  else
    parsed.strategy = parsed.group_size > 0     ? "group"
                      : parsed.group_size == -1 ? "channel"
                                                : "tensor";
  return parsed;
}

bool is_linear_class(const NamePattern& pattern) {
  return pattern.kind() != NamePattern::Kind::Regex && pattern.text() == "Linear";
}

}  // namespace

CompressedTensorsConfig parse_compressed_tensors_config(const nlohmann::json& block) {
  CompressedTensorsConfig parsed;
  const auto top_format = block.value("format", std::string());
  const auto groups = block.value("config_groups", nlohmann::json::object());
  for (const auto& [name, group] : groups.items())
    if (auto read = read_config_group(name, group, top_format))
      parsed.groups.push_back(std::move(*read));
  for (const auto& entry : block.value("ignore", nlohmann::json::array()))
    parsed.ignore.push_back(
        NamePattern::parse(entry.get<std::string>(), PlainPatternMeaning::ExactName));
  return parsed;
}

CtResolution resolve_compressed_tensors(const CompressedTensorsConfig& config,
                                        const std::string& module) {
  for (const auto& pattern : config.ignore)
    if (is_linear_class(pattern) || pattern.matches_module(module)) return {CtDecision::Ignored, 0};
  for (const auto kind : {NamePattern::Kind::Exact, NamePattern::Kind::Regex})
    for (std::size_t g = 0; g < config.groups.size(); ++g)
      for (const auto& target : config.groups[g].targets)
        if (target.kind() == kind && !is_linear_class(target) && target.matches_module(module))
          return {CtDecision::Targeted, g};
  for (std::size_t g = 0; g < config.groups.size(); ++g)
    for (const auto& target : config.groups[g].targets)
      if (is_linear_class(target)) return {CtDecision::Targeted, g};
  return {CtDecision::Unmatched, 0};
}

const ConfigGroupArguments* covering_group(const CompressedTensorsConfig& config,
                                           const std::string& module) {
  const auto resolution = resolve_compressed_tensors(config, module);
  return resolution.decision == CtDecision::Targeted ? &config.groups[resolution.group] : nullptr;
}

std::optional<std::string> first_name_target(const CompressedTensorsConfig& config,
                                             const std::string& name) {
  for (const auto& group : config.groups)
    for (const auto& target : group.targets)
      if (!is_linear_class(target) && target.matches_module(name))
        return fmt::format("{} '{}'", group.name, target.text());
  return std::nullopt;
}

VllmTargets vllm_targets(const CompressedTensorsConfig& config) {
  std::vector<std::string> targets;
  std::vector<std::size_t> group_of_target;
  for (std::size_t g = 0; g < config.groups.size(); ++g)
    for (const auto& target : config.groups[g].targets) {
      const auto seen = std::find(targets.begin(), targets.end(), target.text());
      if (seen != targets.end()) {
        group_of_target[static_cast<std::size_t>(seen - targets.begin())] = g;
        continue;
      }
      targets.push_back(target.text());
      group_of_target.push_back(g);
    }
  std::vector<std::string> ignore;
  for (const auto& entry : config.ignore) ignore.push_back(entry.text());
  return {VllmTargetMatcher(targets, ignore), std::move(group_of_target)};
}

bool is_nvfp4_group(const ConfigGroupArguments& group) {
  return group.type == "float" && group.bits == 4 && group.group_size == 16;
}

std::string scheme_description(const ConfigGroupArguments& group) {
  if (group.type.empty()) return "no weights";
  std::string text;
  if (is_nvfp4_group(group)) {
    text = "nvfp4 (float 4-bit, group 16)";
  } else {
    const std::string granularity =
        group.strategy == "group" ? fmt::format("group {}", group.group_size) : group.strategy;
    text = fmt::format("{}{} {} {}", group.type, group.bits, group.symmetric ? "sym" : "asym",
                       granularity);
  }
  return group.activations_quantized ? text + " + activations" : text;
}

ModeloptExclusions read_modelopt_exclusions(const Checkpoint& checkpoint) {
  ModeloptExclusions found;
  auto read = [&](const std::string& file, const nlohmann::json& block, const char* key) {
    const auto list = block.find(key);
    if (list == block.end() || list->is_null()) return;
    if (!list->is_array() || !std::all_of(list->begin(), list->end(),
                                          [](const auto& entry) { return entry.is_string(); })) {
      found.problems.emplace_back(file, fmt::format("{} is not a list of module names", key));
      return;
    }
    ModeloptExclusionList read_list{file, list->template get<std::vector<std::string>>()};
    if (std::none_of(found.lists.begin(), found.lists.end(),
                     [&](const auto& seen) { return seen.entries == read_list.entries; }))
      found.lists.push_back(std::move(read_list));
  };
  const auto& config = checkpoint.config();
  if (config.is_object() && config.contains("quantization_config")) {
    const auto& block = config["quantization_config"];
    if (block.is_object() && block.value("quant_method", std::string()) == "modelopt") {
      found.declared = true;
      read((checkpoint.directory() / "config.json").string(), block,
           block.contains("exclude_modules") ? "exclude_modules" : "ignore");
    }
  }
  const auto legacy = checkpoint.directory() / std::string(kHfQuantConfigFileName);
  if (std::filesystem::exists(std::filesystem::symlink_status(legacy))) {
    found.declared = true;
    const auto json = parse_json_or_discarded(read_text_file(legacy));
    if (json.is_object() && json.contains("quantization") && json["quantization"].is_object())
      read(legacy.string(), json["quantization"], "exclude_modules");
    else
      found.problems.emplace_back(legacy.string(),
                                  "not a JSON object with a \"quantization\" object");
  }
  return found;
}

std::optional<std::string> modelopt_excluding_entry(const std::vector<std::string>& entries,
                                                    const std::string& module) {
  for (const auto& entry : entries) {
    if (entry.empty()) continue;
    if (module.find(entry) != std::string::npos ||
        NamePattern::parse(entry, PlainPatternMeaning::Glob).matches_module(module))
      return entry;
  }
  return std::nullopt;
}

bool is_config_accountable(const ModuleParameters& parameters) {
  if (parameters.contains("weight_packed")) return true;
  const auto& format = detect_weight_format(parameters);
  if (format.config != ConfigGroup::None) return true;  // every quantized format has one
  if (format.layout != WeightLayout::Dense) return false;
  const auto& weight = parameters.at("weight");
  return weight.info->shape.size() == 2 && is_linear(parse_tensor_name(weight.info->name).role);
}

}  // namespace qs
