#include "config_coverage.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <vector>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/compressed_tensors_config.h"
#include "qs/ckpt/formats/fp8_block_format.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/model/name_pattern.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs::validation {
namespace {

constexpr const char* kCheck = "config";

// One module the config must account for, with where to point a finding.
struct AccountedModule {
  std::string module;
  WeightLayout layout;
  TensorLocation main;  // weight, or weight_packed
  // The unit an engine loads as one matrix (vLLM's fused Linear or a layer's FusedMoE): its
  // members must resolve alike. Empty for modules that stay alone.
  std::string fused_unit;
  std::optional<VllmModule> vllm;  // nullopt: vLLM builds it without the quantization config
};

std::vector<AccountedModule> accounted_modules(const Checkpoint& checkpoint) {
  std::vector<AccountedModule> modules;
  for (const auto& [path, parameters] : modules_of(checkpoint)) {
    if (!is_config_accountable(parameters)) continue;
    const auto main = *code_tensor(parameters);  // every accountable module stores codes
    AccountedModule entry{path, classify_module(parameters), main, {}, std::nullopt};
    const auto parsed = parse_tensor_name(main.info->name);
    entry.vllm = vllm_quantized_module(parsed);
    if (entry.vllm && entry.vllm->fused_moe)
      entry.fused_unit = entry.vllm->name;
    else if (const auto group = fused_group(parsed))
      entry.fused_unit = group->name;
    modules.push_back(std::move(entry));
  }
  return modules;
}

std::string stored_as(const AccountedModule& entry) {
  if (entry.layout == WeightLayout::Dense)
    return fmt::format("dense {}", dtype_name(entry.main.info->dtype));
  return weight_layout_name(entry.layout);
}

void add(ValidationReport& report, const char* kind, const AccountedModule& entry,
         const std::string& message) {
  report.add(Severity::Problem, kCheck, kind, message, entry.main.shard->path().string(),
             entry.main.info->name);
}

// ---- compressed-tensors ----

// What one side (compressed-tensors, or vLLM for the module it builds) decides for a module.
struct Verdict {
  enum class Kind { Group, Ignored, Unmatched, ShardsDisagree } kind = Kind::Unmatched;
  std::size_t group = 0;
  bool operator==(const Verdict&) const = default;
};

std::string describe(const Verdict& verdict, const CompressedTensorsConfig& config) {
  switch (verdict.kind) {
    case Verdict::Kind::Group: {
      const auto& group = config.groups[verdict.group];
      return fmt::format("config group {} ({}, {})", group.name, scheme_description(group),
                         group.format);
    }
    case Verdict::Kind::Ignored:
      return "ignore";
    case Verdict::Kind::Unmatched:
      return "no target";
    case Verdict::Kind::ShardsDisagree:
      return "shards in different states";
  }
  return "?";
}

Verdict compressed_tensors_verdict(const CompressedTensorsConfig& config, const std::string& name) {
  const auto resolution = resolve_compressed_tensors(config, name);
  switch (resolution.decision) {
    case CtDecision::Targeted:
      return {Verdict::Kind::Group, resolution.group};
    case CtDecision::Ignored:
      return {Verdict::Kind::Ignored};
    case CtDecision::Unmatched:
      break;
  }
  return {Verdict::Kind::Unmatched};
}

// vLLM's decision for the module it builds. Shards (of a fused Linear, or expert 0's three
// projections of a FusedMoE) matched by targets of different groups count as disagreeing:
// vLLM takes one shard's scheme for all (Linear) or raises (FusedMoE).
Verdict vllm_verdict(const VllmTargets& targets, const VllmModule& module) {
  const auto resolution = targets.matcher.resolve(module);
  switch (resolution.decision) {
    case VllmDecision::Targeted: {
      const std::size_t group = targets.group_of_target[*resolution.target];
      for (const auto& shard : resolution.shard_targets)
        if (shard && targets.group_of_target[*shard] != group)
          return {Verdict::Kind::ShardsDisagree};
      return {Verdict::Kind::Group, group};
    }
    case VllmDecision::Ignored:
      return {Verdict::Kind::Ignored};
    case VllmDecision::ShardsDisagree:
      return {Verdict::Kind::ShardsDisagree};
    case VllmDecision::Unmatched:
      break;
  }
  return {Verdict::Kind::Unmatched};
}

struct ResolvedModule {
  const AccountedModule* entry;
  Verdict ct;
  std::optional<Verdict> vllm;
};

// Members of one engine-fused unit resolved to different groups, or some ignored and others
// not (by compressed-tensors per member, or by vLLM for the unit). Returns the split units.
std::set<std::string> check_fused_units(const std::vector<ResolvedModule>& resolved,
                                        const CompressedTensorsConfig& config,
                                        ValidationReport& report) {
  std::map<std::string, std::vector<const ResolvedModule*>> units;
  for (const auto& module : resolved)
    if (!module.entry->fused_unit.empty()) units[module.entry->fused_unit].push_back(&module);
  std::set<std::string> split;
  for (const auto& [unit, members] : units) {
    // One example member per distinct compressed-tensors verdict, in name order.
    std::vector<std::pair<Verdict, std::string>> distinct;
    bool vllm_disagrees = false;
    for (const auto* member : members) {
      if (std::none_of(distinct.begin(), distinct.end(),
                       [&](const auto& seen) { return seen.first == member->ct; }))
        distinct.emplace_back(member->ct, member->entry->module);
      vllm_disagrees |= member->vllm && member->vllm->kind == Verdict::Kind::ShardsDisagree;
    }
    if (distinct.size() < 2 && !vllm_disagrees) continue;
    split.insert(unit);
    std::vector<std::string> parts;
    for (const auto& [verdict, member] : distinct)
      parts.push_back(fmt::format("{} → {}", member, describe(verdict, config)));
    const std::string message =
        distinct.size() >= 2
            ? fmt::format("engines load these as one matrix, but compressed-tensors resolves {}",
                          fmt::join(parts, "; "))
            : fmt::format(
                  "engines load these as one matrix, but vLLM matches its shards to "
                  "different config groups or only some of them to ignore");
    report.add(Severity::Problem, kCheck, "config.fused_split", message,
               members.front()->entry->main.shard->path().string(), unit);
  }
  return split;
}

// compressed-tensors' group for a module whose scheme the pack-quantized checks do not own,
// against its tensors.
void judge_compressed_tensors(const ResolvedModule& module, const CompressedTensorsConfig& config,
                              ValidationReport& report) {
  const AccountedModule& entry = *module.entry;
  const bool dense = entry.layout == WeightLayout::Dense;
  const bool both = module.vllm && *module.vllm == module.ct;  // vLLM decides the same
  switch (module.ct.kind) {
    case Verdict::Kind::Unmatched:
      add(report, "config.uncovered_linear", entry,
          fmt::format("{}: no config group targets it and ignore does not list it{}",
                      stored_as(entry),
                      both ? " (vLLM raises \"Unable to find matching target\")" : ""));
      return;
    case Verdict::Kind::Ignored:
      // VQ modules are declared by quantization_config.vq (vq_checks.cpp judges that), and
      // compressed-tensors must leave them alone.
      if (!dense && entry.layout != WeightLayout::Vq) {
        add(report, "config.scheme_mismatch", entry,
            fmt::format("stored {}, but quantization_config ignores it", stored_as(entry)));
        return;
      }
      for (const auto& name : {entry.module, entry.vllm ? entry.vllm->name : entry.module})
        if (const auto target = first_name_target(config, name)) {
          add(report, "config.multiply_covered", entry,
              fmt::format("ignored, but also targeted by {}{}", *target,
                          name == entry.module ? "" : " (as vLLM's " + name + ")"));
          return;
        }
      return;
    case Verdict::Kind::Group:
      break;
    case Verdict::Kind::ShardsDisagree:
      return;
  }
  const auto& group = config.groups[module.ct.group];
  auto mismatch = [&](const std::string& why) {
    add(report, "config.scheme_mismatch", entry,
        fmt::format("stored {}, but config group {} ({}, format \"{}\") targets it{}",
                    stored_as(entry), group.name, scheme_description(group), group.format, why));
  };
  const WeightFormat& compressed_nvfp4 =
      weight_format_for(CodeFamily::Nvfp4, OutputFormat::CompressedTensors);
  if (dense)
    mismatch("; unquantized Linears must be ignored");
  else if (entry.layout == WeightLayout::Vq)
    mismatch("; VQ modules must be ignored (quantization_config.vq declares them)");
  else if (is_nvfp4_layout(entry.layout) && entry.layout != compressed_nvfp4.layout)
    mismatch(fmt::format("; compressed-tensors reads NVFP4 as {} + {}",
                         compressed_nvfp4.parameters.front(), compressed_nvfp4.global_scale));
  else if (entry.layout == compressed_nvfp4.layout &&
           (!is_nvfp4_group(group) || group.format != "nvfp4-pack-quantized"))
    mismatch("");
  // int8 / fp8 / unrecognized layouts: the format's own checks would judge them; we have none.
}

void check_compressed_tensors(const Checkpoint& checkpoint, const nlohmann::json& block,
                              const std::map<std::string, PackQuantizedModule>& int_modules,
                              ValidationReport& report) {
  const std::string file = (checkpoint.directory() / "config.json").string();
  std::optional<CompressedTensorsConfig> parsed;
  try {
    parsed = parse_compressed_tensors_config(block);
  } catch (const std::exception& error) {  // nlohmann type errors, unparsable patterns
    // With pack-quantized modules, int.config_mismatch already says so.
    if (int_modules.empty())
      report.add(Severity::Problem, kCheck, "config.unreadable",
                 fmt::format("quantization_config cannot be read: {}", error.what()), file);
    return;
  }
  const CompressedTensorsConfig& config = *parsed;
  const VllmTargets targets = vllm_targets(config);
  const auto modules = accounted_modules(checkpoint);
  std::map<std::string, Verdict> vllm_cache;  // by vLLM module name: fused shards share one
  std::vector<ResolvedModule> resolved;
  for (const auto& entry : modules) {
    ResolvedModule module{&entry, compressed_tensors_verdict(config, entry.module), std::nullopt};
    if (entry.vllm) {
      auto found = vllm_cache.find(entry.vllm->name);
      if (found == vllm_cache.end())
        found = vllm_cache.emplace(entry.vllm->name, vllm_verdict(targets, *entry.vllm)).first;
      module.vllm = found->second;
    }
    resolved.push_back(module);
  }
  const auto split = check_fused_units(resolved, config, report);
  for (const auto& module : resolved) {
    const AccountedModule& entry = *module.entry;
    const bool is_int = int_modules.contains(entry.module);
    // Where the unit is split, that finding explains the two sides disagreeing; for a
    // pack-quantized module the int checks already report a compressed-tensors side that is
    // not one of its groups.
    const bool explained =
        split.contains(entry.fused_unit) || (is_int && module.ct.kind != Verdict::Kind::Group);
    if (module.vllm && *module.vllm != module.ct && !explained) {
      const bool one_unmatched = module.vllm->kind == Verdict::Kind::Unmatched ||
                                 module.ct.kind == Verdict::Kind::Unmatched;
      add(report, one_unmatched ? "config.uncovered_linear" : "config.multiply_covered", entry,
          fmt::format("{}: compressed-tensors resolves it to {}, but vLLM (as {}) to {}",
                      stored_as(entry), describe(module.ct, config), entry.vllm->name,
                      describe(*module.vllm, config)));
      continue;
    }
    if (!is_int) judge_compressed_tensors(module, config, report);
  }
}

// ---- modelopt ----

void check_modelopt(const Checkpoint& checkpoint, ValidationReport& report) {
  const auto modules = accounted_modules(checkpoint);
  const auto exclusions = read_modelopt_exclusions(checkpoint);
  for (const auto& [file, message] : exclusions.problems)
    report.add(Severity::Problem, kCheck, "config.unreadable", message, file);
  for (const auto& list : exclusions.lists) {
    const std::string source = std::filesystem::path(list.file).filename().string();
    std::map<std::string, std::set<bool>> unit_states;
    std::map<std::string, const AccountedModule*> unit_example;
    for (const auto& entry : modules) {
      const auto excluding = modelopt_excluding_entry(list.entries, entry.module);
      if (!entry.fused_unit.empty()) {
        unit_states[entry.fused_unit].insert(excluding.has_value());
        unit_example.try_emplace(entry.fused_unit, &entry);
      }
      if (is_nvfp4_layout(entry.layout) && excluding)
        add(report, "config.scheme_mismatch", entry,
            fmt::format("stored {}, but {}'s exclude_modules entry '{}' excludes it",
                        stored_as(entry), source, *excluding));
      else if (entry.layout == WeightLayout::Dense && !excluding)
        add(report, "config.scheme_mismatch", entry,
            fmt::format("stored {}, but no exclude_modules entry of {} excludes it: engines "
                        "build it NVFP4",
                        stored_as(entry), source));
    }
    for (const auto& [unit, states] : unit_states)
      if (states.size() > 1)
        report.add(Severity::Problem, kCheck, "config.fused_split",
                   fmt::format("engines load these as one matrix, but {}'s exclude_modules "
                               "excludes only some of its members",
                               source),
                   unit_example.at(unit)->main.shard->path().string(), unit);
  }
}

// ---- fp8 (DeepSeek's block-scaled layout) ----

void report_undeclared_quantization(const Checkpoint& checkpoint, const std::string& method,
                                    ValidationReport& report);

// quant_method "fp8" over FP8 block-scaled modules: weight_block_size [128, 128]; those modules
// are not in the ignore lists (engines would read their codes as plain weights); every other
// quantized module is undeclared (fp8 declares only these); and every Linear vLLM builds with
// the config that we keep dense is listed (vLLM would build it FP8 and find no
// weight_scale_inv). lm_head and routers are built unquantized whatever the lists say.
void check_fp8(const Checkpoint& checkpoint, const nlohmann::json& block,
               ValidationReport& report) {
  const auto modules = accounted_modules(checkpoint);
  if (std::none_of(modules.begin(), modules.end(), [](const AccountedModule& entry) {
        return entry.layout == WeightLayout::Fp8Block;
      })) {
    report_undeclared_quantization(checkpoint, "fp8", report);
    return;
  }
  try {
    require_supported_fp8_config(checkpoint.config(),
                                 (checkpoint.directory() / "config.json").string());
  } catch (const Error& error) {
    report.add(Severity::Problem, kCheck, error.kind(), error.detail(), error.file());
  }
  std::set<std::string> ignored;
  for (const char* key : {"ignored_layers", "modules_to_not_convert"})
    if (block.contains(key) && block.at(key).is_array())
      for (const auto& entry : block.at(key))
        if (entry.is_string()) ignored.insert(entry.get<std::string>());
  for (const auto& entry : modules) {
    const bool listed =
        ignored.contains(entry.module) || (entry.vllm && ignored.contains(entry.vllm->name));
    const auto role = parse_tensor_name(entry.main.info->name).role;
    if (entry.layout == WeightLayout::Fp8Block && listed)
      add(report, "config.scheme_mismatch", entry,
          "stored fp8-block, but quantization_config lists it as not converted: engines read "
          "its codes as plain weights");
    else if (entry.layout != WeightLayout::Fp8Block && entry.layout != WeightLayout::Dense)
      add(report, "config.undeclared_quantization", entry,
          fmt::format("stored {}, but quant_method fp8 declares FP8 block-scaled weights only: "
                      "no engine loads it as quantized",
                      stored_as(entry)));
    else if (entry.layout == WeightLayout::Dense && entry.vllm && !listed &&
             role != TensorRole::LmHead && role != TensorRole::MtpSharedHeadLmHead &&
             role != TensorRole::RouterGate)
      add(report, "config.uncovered_linear", entry,
          fmt::format("stored {}, but no ignored_layers entry lists it: vLLM builds it FP8 and "
                      "finds no weight_scale_inv",
                      stored_as(entry)));
  }
}

// Quantized tensors no quantization config declares: engines load the codes as they find them
// (packed int32 words or fp4 bytes read as plain weights) or refuse the checkpoint. One finding
// per quantized module, at its codes tensor, so a reader sees which ones.
void report_undeclared_quantization(const Checkpoint& checkpoint, const std::string& method,
                                    ValidationReport& report) {
  const std::string declared =
      method.empty() ? std::string("config.json has no quantization_config")
                     : fmt::format("quantization_config's quant_method is \"{}\"", method);
  for (const auto& entry : accounted_modules(checkpoint))
    if (is_quantized_layout(entry.layout))
      add(report, "config.undeclared_quantization", entry,
          fmt::format("stored {}, but {}: no engine loads it as quantized", stored_as(entry),
                      declared));
}

}  // namespace

void check_config_coverage(const Checkpoint& checkpoint,
                           const std::map<std::string, PackQuantizedModule>& int_modules,
                           ValidationReport& report) {
  const auto& config = checkpoint.config();
  const nlohmann::json* block = nullptr;
  if (config.is_object() && config.contains("quantization_config") &&
      config["quantization_config"].is_object())
    block = &config["quantization_config"];
  const std::string method = block ? block->value("quant_method", std::string()) : "";
  const bool modelopt =
      method == "modelopt" ||
      std::filesystem::exists(checkpoint.directory() / std::string(kHfQuantConfigFileName));
  if (method == "fp8") {
    if (std::find(report.checks_run.begin(), report.checks_run.end(), kCheck) ==
        report.checks_run.end())
      report.checks_run.push_back(kCheck);
    check_fp8(checkpoint, *block, report);
    return;
  }
  if (method != "compressed-tensors" && !modelopt) {
    report_undeclared_quantization(checkpoint, method, report);
    return;
  }
  // validate_checkpoint's config check already ran under this name.
  if (std::find(report.checks_run.begin(), report.checks_run.end(), kCheck) ==
      report.checks_run.end())
    report.checks_run.push_back(kCheck);
  if (method == "compressed-tensors")
    check_compressed_tensors(checkpoint, *block, int_modules, report);
  else
    check_modelopt(checkpoint, report);
}

}  // namespace qs::validation
