#include "qs/ckpt/plan/draft_target_resolution.h"

#include <fmt/format.h>

#include <map>
#include <nlohmann/json.hpp>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/model/name_pattern.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/formats/quantization_detection.h"

namespace qs {
namespace {

// The bit widths vLLM's WNA16 schemes (Linear and MoE) accept.
bool wna16_bits(int bits) { return bits == 4 || bits == 8; }

nlohmann::json read_json(const std::filesystem::path& file) {
  if (!std::filesystem::is_regular_file(file))
    throw_bad_input("target.unreadable", "no such file", file.string());
  auto json = nlohmann::json::parse(read_text_file(file), nullptr, false);
  if (!json.is_object()) throw_bad_input("target.unreadable", "not a JSON object", file.string());
  return json;
}

void read_modelopt(const nlohmann::json& block, const char* exclusions_key,
                   TargetQuantization& target) {
  target.format = TargetQuantization::Format::Modelopt;
  target.modelopt_algorithm = block.value("quant_algo", std::string());
  const auto list = block.find(exclusions_key);
  if (list == block.end() || list->is_null()) return;
  if (!list->is_array())
    throw_bad_input("target.unreadable", fmt::format("{} is not a list", exclusions_key),
                    target.file);
  for (const auto& entry : *list)
    if (entry.is_string()) target.modelopt_exclusions.push_back(entry.get<std::string>());
}

// What vLLM's compressed-tensors config builds for a module resolved to `group`.
DraftModuleScheme compressed_tensors_scheme(const TargetQuantization& target, std::size_t index) {
  const auto& group = target.compressed_tensors.groups[index];
  DraftModuleScheme scheme;
  scheme.decided_by = fmt::format("config group {} ({}, format \"{}\")", group.name,
                                  scheme_description(group), group.format);
  auto unsupported = [&](const std::string& why) {
    scheme.kind = DraftSchemeKind::Unproducible;
    scheme.problem = fmt::format("{}: {}", scheme.decided_by, why);
    return scheme;
  };
  if (is_nvfp4_group(group)) {
    if (group.format != "nvfp4-pack-quantized")
      return unsupported("NVFP4 weights in a format other than nvfp4-pack-quantized");
    scheme.kind = DraftSchemeKind::Nvfp4;
    scheme.activations = group.activations_quantized;
    return scheme;
  }
  if (group.type != "int" || group.activations_quantized || group.format != "pack-quantized")
    return unsupported("not a weight-only pack-quantized integer or NVFP4 scheme");
  if (!wna16_bits(group.bits)) return unsupported("vLLM's WNA16 schemes take 4 or 8 bits only");
  if (group.strategy != "group" && group.strategy != "channel")
    return unsupported("vLLM's WNA16 schemes need group or channel strategy");
  if (std::find(target.act_order_groups.begin(), target.act_order_groups.end(), group.name) !=
      target.act_order_groups.end())
    return unsupported("activation ordering by groups (weight_g_idx) is not written by quantsmith");
  scheme.kind = DraftSchemeKind::Integer;
  scheme.integer.bits = group.bits;
  scheme.integer.symmetric = group.symmetric;
  scheme.integer.group_size = group.strategy == "channel" ? kChannelGroup : group.group_size;
  return scheme;
}

DraftModuleScheme resolve_compressed_tensors_module(const TargetQuantization& target,
                                                    const VllmTargets& targets,
                                                    const VllmModule& module) {
  const auto resolution = targets.matcher.resolve(module);
  const bool lm_head = module.class_name == "ParallelLMHead";
  DraftModuleScheme scheme;
  switch (resolution.decision) {
    case VllmDecision::Targeted: {
      const std::size_t group = targets.group_of_target[*resolution.target];
      for (const auto& shard : resolution.shard_targets)
        if (shard && targets.group_of_target[*shard] != group) {
          scheme.kind = DraftSchemeKind::Unproducible;
          scheme.problem = "the target's config matches its shards to different config groups";
          return scheme;
        }
      return compressed_tensors_scheme(target, group);
    }
    case VllmDecision::Ignored:
      scheme.decided_by = "ignore";
      return scheme;
    case VllmDecision::ShardsDisagree:
      scheme.kind = DraftSchemeKind::Unproducible;
      scheme.problem = "the target's config ignores only some of its shards (vLLM raises)";
      return scheme;
    case VllmDecision::Unmatched:
      break;
  }
  if (lm_head) {  // vLLM builds a ParallelLMHead no target matches unquantized
    scheme.decided_by = "no target (lm head: unquantized)";
    return scheme;
  }
  scheme.kind = DraftSchemeKind::Unproducible;
  scheme.problem =
      "the target's config neither targets nor ignores it (vLLM raises \"Unable to find "
      "matching target\")";
  return scheme;
}

DraftModuleScheme resolve_modelopt_module(const TargetQuantization& target,
                                          const std::string& module, const VllmModule& vllm) {
  DraftModuleScheme scheme;
  for (const auto& name : {module, vllm.name})
    if (const auto entry = modelopt_excluding_entry(target.modelopt_exclusions, name)) {
      scheme.decided_by = fmt::format("exclude_modules entry '{}'", *entry);
      return scheme;
    }
  scheme.decided_by = fmt::format("quant_algo {}", target.modelopt_algorithm);
  if (target.modelopt_algorithm == "W4A16_NVFP4" || target.modelopt_algorithm == "NVFP4") {
    scheme.kind = DraftSchemeKind::Nvfp4;
    scheme.activations = target.modelopt_algorithm == "NVFP4";
    return scheme;
  }
  scheme.kind = DraftSchemeKind::Unproducible;
  scheme.problem = fmt::format("{}: not an NVFP4 algorithm", scheme.decided_by);
  return scheme;
}

}  // namespace

TargetQuantization read_target_quantization(const std::filesystem::path& path) {
  const bool directory = std::filesystem::is_directory(path);
  const auto config_file = directory ? path / "config.json" : path;
  TargetQuantization target;
  target.file = config_file.string();
  const auto config = read_json(config_file);
  const auto block = config.find("quantization_config");
  if (block != config.end() && block->is_object()) {
    const std::string method = block->value("quant_method", std::string());
    if (method == "compressed-tensors") {
      target.format = TargetQuantization::Format::CompressedTensors;
      try {
        target.compressed_tensors = parse_compressed_tensors_config(*block);
      } catch (const Error&) {
        throw;
      } catch (const std::exception& error) {
        throw_bad_input("target.unreadable",
                        fmt::format("quantization_config cannot be read: {}", error.what()),
                        target.file);
      }
      const auto groups = block->value("config_groups", nlohmann::json::object());
      for (const auto& [name, group] : groups.items())
        if (group.is_object() && group.contains("weights") && group["weights"].is_object() &&
            group["weights"].value("actorder", nlohmann::json()) == "group")
          target.act_order_groups.push_back(name);
      return target;
    }
    if (method == "modelopt") {
      read_modelopt(*block, block->contains("exclude_modules") ? "exclude_modules" : "ignore",
                    target);
      return target;
    }
    throw_bad_input("target.unsupported",
                    fmt::format("quant_method '{}': quantsmith reads compressed-tensors and "
                                "modelopt configs only",
                                method),
                    target.file);
  }
  // vLLM falls back to hf_quant_config.json when config.json has no quantization_config.
  const auto legacy = config_file.parent_path() / std::string(kHfQuantConfigFileName);
  if (std::filesystem::exists(legacy)) {
    target.file = legacy.string();
    const auto json = read_json(legacy);
    if (!json.contains("quantization") || !json["quantization"].is_object())
      throw_bad_input("target.unreadable", "no \"quantization\" object", target.file);
    read_modelopt(json["quantization"], "exclude_modules", target);
  }
  return target;
}

std::string DraftModuleScheme::description() const {
  switch (kind) {
    case DraftSchemeKind::Unquantized:
      return "BF16";
    case DraftSchemeKind::Nvfp4:
      return activations ? "nvfp4 + nvfp4 activations" : "nvfp4";
    case DraftSchemeKind::Integer:
      return integer.label();
    case DraftSchemeKind::Unproducible:
      return problem;
  }
  return "?";
}

std::vector<DraftModuleScheme> resolve_draft_modules(
    const TargetQuantization& target, const std::vector<std::string>& linear_weights) {
  std::optional<VllmTargets> targets;
  if (target.format == TargetQuantization::Format::CompressedTensors)
    targets = vllm_targets(target.compressed_tensors);
  std::vector<DraftModuleScheme> schemes;
  std::map<std::string, std::vector<std::size_t>> units;  // vLLM module → rows
  for (const auto& weight : linear_weights) {
    const auto parsed = parse_tensor_name(weight);
    const auto vllm = vllm_quantized_module(parsed);
    DraftModuleScheme scheme;
    if (!vllm) {
      scheme.decided_by = "built without the quantization config";
    } else if (target.format == TargetQuantization::Format::None) {
      scheme.decided_by = "the target is not quantized";
    } else if (targets) {
      scheme = resolve_compressed_tensors_module(target, *targets, *vllm);
    } else {
      scheme = resolve_modelopt_module(target, parsed.module_path, *vllm);
    }
    scheme.module = parsed.module_path;
    if (vllm) {
      scheme.vllm_module = vllm->name;
      units[vllm->name].push_back(schemes.size());
    }
    schemes.push_back(std::move(scheme));
  }
  // Members of one engine matrix must come out alike (modelopt exclusions are per name).
  for (const auto& [unit, rows] : units) {
    const auto& first = schemes[rows.front()];
    bool alike = true;
    for (const auto row : rows) {
      const auto& other = schemes[row];
      alike &= other.kind == first.kind && other.integer == first.integer &&
               other.activations == first.activations;
    }
    if (alike) continue;
    for (const auto row : rows) {
      schemes[row].kind = DraftSchemeKind::Unproducible;
      schemes[row].problem = fmt::format(
          "vLLM loads {} as one matrix, but the target's config gives its members "
          "different schemes",
          unit);
    }
  }
  return schemes;
}

std::optional<Recipe> draft_recipe_for_target(const TargetQuantization& target,
                                              const std::vector<DraftModuleScheme>& schemes,
                                              const std::string& source_name) {
  Recipe recipe;
  recipe.source = source_name;
  recipe.description = "each draft Linear in the scheme vLLM builds it with for " + target.file;
  recipe.format = target.format == TargetQuantization::Format::Modelopt
                      ? OutputFormat::Modelopt
                      : OutputFormat::CompressedTensors;
  for (const auto& scheme : schemes) {
    if (scheme.kind == DraftSchemeKind::Unproducible)
      throw_bad_input(
          "mtp.target_scheme_unsupported",
          fmt::format("{} (as vLLM's {}): {}", scheme.module, scheme.vllm_module, scheme.problem),
          target.file, scheme.module);
    if (scheme.kind == DraftSchemeKind::Nvfp4 && scheme.activations)
      throw_bad_input("mtp.target_scheme_unsupported",
                      fmt::format("{}: {} quantizes activations too (W4A4), whose static input "
                                  "scales need calibration statistics of the draft",
                                  scheme.module, scheme.decided_by),
                      target.file, scheme.module);
    if (scheme.kind == DraftSchemeKind::Unquantized) continue;
    RecipeRule rule;
    rule.name = fmt::format("{} as the target builds it: {}", scheme.module, scheme.decided_by);
    rule.modules.push_back(NamePattern::parse(scheme.module, PlainPatternMeaning::ExactName));
    rule.action = scheme.kind == DraftSchemeKind::Nvfp4 ? RecipeAction::Nvfp4 : RecipeAction::Int;
    rule.integer = scheme.integer;
    recipe.rules.push_back(std::move(rule));
  }
  if (recipe.rules.empty()) return std::nullopt;
  return recipe;
}

std::vector<DraftTargetMismatch> check_draft_against_target(const Checkpoint& draft,
                                                            const TargetQuantization& target) {
  struct Module {
    std::string path;
    const ModuleParameters* parameters;
    TensorLocation main;
  };
  const auto modules = modules_of(draft);
  std::vector<Module> linears;
  std::vector<std::string> names;
  for (const auto& [path, parameters] : modules) {
    if (!is_config_accountable(parameters)) continue;
    const auto main = *code_tensor(parameters);  // every accountable module stores codes
    linears.push_back({path, &parameters, main});
    names.push_back(path + ".weight");
  }
  const auto schemes = resolve_draft_modules(target, names);
  const bool modelopt = target.format == TargetQuantization::Format::Modelopt;
  std::vector<DraftTargetMismatch> mismatches;
  for (std::size_t i = 0; i < linears.size(); ++i) {
    const auto& module = linears[i];
    const auto& scheme = schemes[i];
    const auto& parameters = *module.parameters;
    const WeightFormat& format = detect_weight_format(parameters);
    const WeightLayout layout = format.layout;
    std::string stored = layout == WeightLayout::Dense
                             ? fmt::format("dense {}", dtype_name(module.main.info->dtype))
                             : format.name;
    if (layout == WeightLayout::PackQuantized) {
      try {
        stored += " " + pack_quantized_options(module.path, parameters, "", "int.unknown").label();
      } catch (const Error&) {  // the int checks of validate say what is wrong with it
      }
    }
    std::string why;  // empty: it holds what vLLM builds
    switch (scheme.kind) {
      case DraftSchemeKind::Unquantized:
        if (layout != WeightLayout::Dense) why = "vLLM builds it unquantized";
        break;
      case DraftSchemeKind::Nvfp4: {
        const WeightFormat& wanted = weight_format_for(
            CodeFamily::Nvfp4, modelopt ? OutputFormat::Modelopt : OutputFormat::CompressedTensors);
        if (layout != wanted.layout)
          why = fmt::format("vLLM builds it {}", wanted.name);
        else if (scheme.activations && !parameters.contains(wanted.optional_parameter))
          why = "vLLM builds it with static NVFP4 activation scales, which the draft lacks";
        break;
      }
      case DraftSchemeKind::Integer: {
        if (layout != WeightLayout::PackQuantized) {
          why = "vLLM builds it pack-quantized";
          break;
        }
        const auto shape = format.logical_shape(parameters);
        const auto& packed = parameters.at("weight_packed").info->shape;
        const auto& scales = parameters.at("weight_scale").info->shape;
        const auto& options = scheme.integer;
        const std::uint64_t cols = shape ? (*shape)[1] : 0;
        const std::uint64_t words = (cols * static_cast<std::uint64_t>(options.bits) + 31) / 32;
        const std::uint64_t groups =
            options.group_size == kChannelGroup || options.group_size <= 0
                ? 1
                : (cols + static_cast<std::uint64_t>(options.group_size) - 1) /
                      static_cast<std::uint64_t>(options.group_size);
        const bool zero_points = parameters.contains("weight_zero_point");
        if (!shape || packed.size() != 2 || packed[1] != words)
          why = fmt::format("vLLM allocates {}-bit codes", options.bits);
        else if (zero_points == options.symmetric)
          why = options.symmetric ? "vLLM allocates no zero points (symmetric)"
                                  : "vLLM allocates zero points (asymmetric)";
        else if (scales.size() != 2 || scales[1] != groups)
          why = fmt::format("vLLM allocates {} scale column(s)", groups);
        break;
      }
      case DraftSchemeKind::Unproducible:
        why = scheme.problem;
        break;
    }
    if (why.empty()) continue;
    const std::string message =
        scheme.kind == DraftSchemeKind::Unproducible
            ? fmt::format("stored {}, but paired with the target: {}", stored, why)
            : fmt::format("stored {}, but paired with the target vLLM builds it as {} ({}): {}",
                          stored, scheme.description(), scheme.decided_by, why);
    mismatches.push_back(
        {module.path, module.main.shard->path().string(), module.main.info->name, message});
  }
  return mismatches;
}

}  // namespace qs
