#include "qs/ckpt/compressed_tensors_config.h"

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

}  // namespace

CompressedTensorsConfig parse_compressed_tensors_config(const nlohmann::json& block) {
  CompressedTensorsConfig parsed;
  const auto top_format = block.value("format", std::string());
  const auto groups = block.value("config_groups", nlohmann::json::object());
  for (const auto& [name, group] : groups.items())
    if (auto read = read_config_group(name, group, top_format)) parsed.groups.push_back(std::move(*read));
  for (const auto& entry : block.value("ignore", nlohmann::json::array()))
    parsed.ignore.push_back(
        NamePattern::parse(entry.get<std::string>(), PlainPatternMeaning::ExactName));
  return parsed;
}

const ConfigGroupArguments* covering_group(const CompressedTensorsConfig& config,
                                           const std::string& module) {
  auto is_linear_class = [](const NamePattern& pattern) {
    return pattern.kind() != NamePattern::Kind::Regex && pattern.text() == "Linear";
  };
  for (const auto& pattern : config.ignore)
    if (is_linear_class(pattern) || pattern.matches_module(module)) return nullptr;
  for (const auto kind : {NamePattern::Kind::Exact, NamePattern::Kind::Regex})
    for (const auto& group : config.groups)
      for (const auto& target : group.targets)
        if (target.kind() == kind && target.matches_module(module)) return &group;
  for (const auto& group : config.groups)
    for (const auto& target : group.targets)
      if (is_linear_class(target)) return &group;
  return nullptr;
}


}  // namespace qs
