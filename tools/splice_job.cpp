#include "splice_job.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "plan_execution.h"
#include "qs/ckpt/core/byte_size.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/job/executor.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/model/tensor_name.h"
#include "qs/ckpt/validate/validation.h"
#include "qs/quant/nvfp4_layout_conversion.h"
#include "qs/quant/nvfp4_validation.h"

namespace qs::cli {
namespace {

// What the plan copies must be what `validate` accepts: its structural checks of NVFP4 and
// pack-quantized modules (nvfp4.*, int.*; headers and the small scale tensors) run on every
// source, and a problem in a module the output takes from it refuses the splice before any
// byte is written. The sources' own quantization configs are not checked (int.config_mismatch,
// config.*): the output gets a config of its own, built from the tensors. Layouts against
// config.json were checked when the sources were opened.
void check_spliced_modules(const SplicePlan& planned) {
  std::map<const Checkpoint*, std::set<std::string>> taken;
  for (const auto& decision : planned.decisions)
    taken[planned.plan.inputs.at(decision.input)].insert(decision.module);
  for (const auto& [source, modules] : taken) {
    ValidationReport report;
    validate_nvfp4(*source, {}, report);
    for (const auto& finding : report.findings) {
      const bool structural = finding.check == "nvfp4" ||
                              (finding.check == "int" && finding.kind != "int.config_mismatch");
      if (finding.severity != Severity::Problem || !structural) continue;
      if (!modules.contains(parse_tensor_name(finding.tensor).module_path)) continue;
      throw Error(ErrorClass::BadInput, "splice.malformed_module",
                  fmt::format("{} ({}); `quantsmith validate {}` lists every problem",
                              finding.message, finding.kind, source->directory().string()),
                  finding.file.empty() ? source->directory().string() : finding.file,
                  finding.tensor);
    }
  }
}

std::optional<OutputFormat> requested_format(const std::string& text) {
  if (text == "auto") return std::nullopt;
  if (const auto format = parse_output_format(text)) return format;
  throw Error(ErrorClass::BadInput, "cli.bad_format",
              fmt::format("--format {}: expected auto, modelopt or compressed-tensors", text));
}

// Per source: modules taken and bytes read from it.
struct SourceTotals {
  std::size_t modules = 0;
  std::uint64_t bytes = 0;
};

std::vector<SourceTotals> totals_per_input(const SplicePlan& planned) {
  std::vector<SourceTotals> totals(planned.plan.inputs.size());
  for (const auto& decision : planned.decisions) ++totals[decision.input].modules;
  for (const auto& item : planned.plan.items)
    totals[item.sources.front().input].bytes += item.source_bytes();
  return totals;
}

std::string format_label(const SplicePlan& planned) {
  if (!planned.model.fp8_block_modules.empty()) return "fp8-block";
  return planned.format ? output_format_name(*planned.format) : "unquantized";
}

nlohmann::ordered_json plan_json(const SplicePlan& planned, const std::vector<TakeRule>& rules) {
  nlohmann::ordered_json out;
  const auto totals = totals_per_input(planned);
  auto sources = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < planned.plan.inputs.size(); ++i)
    sources.push_back({{"path", planned.plan.inputs[i]->directory().string()},
                       {"role", i == 0 ? "base" : "take"},
                       {"modules", totals[i].modules},
                       {"bytes", totals[i].bytes}});
  out["sources"] = std::move(sources);
  auto rule_rows = nlohmann::ordered_json::array();
  for (std::size_t r = 0; r < rules.size(); ++r)
    rule_rows.push_back({{"rule", rules[r].text}, {"modules", planned.modules_per_rule[r]}});
  out["rules"] = std::move(rule_rows);
  out["format"] = format_label(planned);
  out["nvfp4_modules"] = planned.model.nvfp4_modules.size();
  auto groups = nlohmann::ordered_json::array();
  for (const auto& group : planned.model.integer_groups)
    groups.push_back({{"scheme", group.options.label()}, {"modules", group.modules.size()}});
  out["integer_groups"] = std::move(groups);
  out["unquantized_linears"] = planned.model.unquantized_linears.size();
  out["converted_modules"] = std::count_if(planned.decisions.begin(), planned.decisions.end(),
                                           [](const auto& d) { return d.converted; });
  out["source_bytes"] = planned.plan.source_bytes();
  out["output_bytes"] = planned.plan.output_bytes();
  out["warnings"] = planned.warnings;
  auto modules = nlohmann::ordered_json::array();
  for (const auto& decision : planned.decisions)
    modules.push_back({{"module", decision.module},
                       {"source", planned.plan.inputs[decision.input]->directory().string()},
                       {"rule", decision.rule},
                       {"layout", decision.layout},
                       {"converted", decision.converted}});
  out["modules"] = std::move(modules);
  return out;
}

void print_plan(const SplicePlan& planned, const std::vector<TakeRule>& rules, bool per_module) {
  const auto totals = totals_per_input(planned);
  for (std::size_t i = 0; i < planned.plan.inputs.size(); ++i)
    fmt::print("  {} {}: {} modules, {}\n", i == 0 ? "base" : "take",
               planned.plan.inputs[i]->directory().string(), totals[i].modules,
               human_bytes(totals[i].bytes));
  for (std::size_t r = 0; r < rules.size(); ++r)
    fmt::print("  rule '{}': {} modules\n", rules[r].text, planned.modules_per_rule[r]);
  fmt::print("  output: {}; {} NVFP4 Linears", format_label(planned),
             planned.model.nvfp4_modules.size());
  for (const auto& group : planned.model.integer_groups)
    fmt::print(", {} {}", group.modules.size(), group.options.label());
  const auto converted = std::count_if(planned.decisions.begin(), planned.decisions.end(),
                                       [](const auto& d) { return d.converted; });
  fmt::print(
      ", {} unquantized Linears{}\n", planned.model.unquantized_linears.size(),
      converted ? fmt::format(" ({} NVFP4 modules converted to this layout)", converted) : "");
  if (!per_module) return;
  for (const auto& decision : planned.decisions)
    if (decision.input != 0)
      fmt::print("    {} ← {} [{}{}]\n", decision.module,
                 planned.plan.inputs[decision.input]->directory().string(), decision.layout,
                 decision.converted ? ", converted" : "");
}

}  // namespace

void add_splice_job_options(CLI::App& command, SpliceJobOptions& options) {
  command
      .add_option("--format", options.format,
                  "auto (compressed-tensors when any source uses it or any module is an integer "
                  "one, else modelopt), modelopt or compressed-tensors; NVFP4 modules in the "
                  "other layout are converted (codes and block scales unchanged)")
      ->capture_default_str();
  command.add_flag("--dry-run", options.dry_run,
                   "print where every module comes from and write nothing");
  command.add_flag("--json", options.json, "machine-readable plan / summary on stdout");
  command.add_flag("--resume", options.resume, "continue a killed or interrupted run");
  command.add_flag("--force", options.force,
                   "start over: remove an earlier job's output first (only the files its job "
                   "file records; anything else in the directory refuses the run)");
  command.add_option("--max-shard-size", options.max_shard_size, "largest output shard")
      ->capture_default_str();
  command.add_option("--max-buffer", options.max_buffer, "bytes in flight between read and write")
      ->capture_default_str();
  add_partition_option(command, options.partition);
}

int run_splice(const std::string& output, const std::string& base_path,
               const std::vector<TakeRule>& rules, const SpliceJobOptions& options,
               const std::string& label) {
  const auto format = requested_format(options.format);
  const auto partition = partition_from_flag(options.partition);
  // Each distinct path opened once (a source named by several rules is one input).
  std::map<std::filesystem::path, std::unique_ptr<Checkpoint>> opened;
  auto open = [&](const std::string& path) -> const Checkpoint* {
    const auto key = std::filesystem::weakly_canonical(path);
    auto& slot = opened[key];
    if (!slot) {
      slot = std::make_unique<Checkpoint>(Checkpoint::open(path));
      require_layout_matches_config(*slot);
    }
    return slot.get();
  };
  SpliceRequest request;
  request.base = open(base_path);
  for (const auto& rule : rules) request.rule_sources.push_back(open(rule.source));
  request.rules = rules;
  request.format = format;
  std::vector<std::filesystem::path> inputs;
  for (const auto& [path, checkpoint] : opened) inputs.push_back(checkpoint->directory());
  check_output_directory(output, inputs);

  const auto planned = plan_splice(request, make_nvfp4_layout_conversion);
  check_spliced_modules(planned);
  for (const auto& warning : planned.warnings)
    fmt::print(stderr, "quantsmith: warning: {}\n", warning);
  if (options.dry_run) {
    const auto max_shard_bytes = parse_byte_size(options.max_shard_size);
    if (options.json) {
      auto out = plan_json(planned, rules);
      if (partition) out["part"] = part_share_json(planned.plan, max_shard_bytes, *partition);
      fmt::print("{}\n", out.dump(2));
    } else {
      print_plan(planned, rules, true);
      if (partition) fmt::print("{}\n", part_share_line(planned.plan, max_shard_bytes, *partition));
    }
    return kExitOk;
  }

  ExecutionOptions execution;
  execution.output_directory = output;
  execution.max_shard_bytes = parse_byte_size(options.max_shard_size);
  execution.max_buffer_bytes = parse_byte_size(options.max_buffer);
  execution.resume = options.resume;
  execution.force = options.force;
  execution.fingerprint =
      fmt::format("quantsmith {}|{}|format={}", kQuantsmithVersion, label, format_label(planned));
  for (const auto& rule : rules) execution.fingerprint += "|" + rule.text;
  execution.extra_files = output_config_files(*request.base, planned.model, planned.format);
  execution.partition = partition;
  const auto report = execute_with_progress(planned.plan, execution, label);
  if (report.interrupted) return report_interruption(report);
  if (partition && report.already_finalized) {
    if (options.json)
      fmt::print("{}\n", part_status_json(report, *partition).dump(2));
    else
      print_part_status(report, *partition, output);
    return kExitOk;
  }

  const double seconds = std::max(report.seconds, 1e-9);
  if (options.json) {
    auto out = plan_json(planned, rules);
    out["output"] = output;
    out["run"] = {{"seconds", seconds},
                  {"bytes_read", report.bytes_read},
                  {"bytes_written", report.bytes_written},
                  {"gb_per_s", report.bytes_read / 1e9 / seconds},
                  {"shards_written", report.shards_written},
                  {"shards_resumed", report.shards_resumed}};
    if (partition) out["run"]["part"] = part_status_json(report, *partition);
    fmt::print("{}\n", out.dump(2));
    return kExitOk;
  }
  fmt::print("{} → {}: {} modules from {} source(s), {} in {:.2f} s ({:.2f} GB/s read)\n", label,
             output, planned.decisions.size(), planned.plan.inputs.size(),
             human_bytes(report.bytes_written), seconds, report.bytes_read / 1e9 / seconds);
  print_plan(planned, rules, false);
  if (partition) print_part_status(report, *partition, output);
  return kExitOk;
}

}  // namespace qs::cli
