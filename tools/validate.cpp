// quantsmith validate PATH: structure, format and numeric sanity of a checkpoint, with an
// exit code for CI (0 valid, 1 problems found, 2 unreadable).

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli_support.h"
#include "progress_line.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/compressed_tensors_config.h"
#include "qs/ckpt/formats/vq_declaration.h"
#include "qs/ckpt/plan/draft_target_resolution.h"
#include "qs/ckpt/validate/engine_quirks.h"
#include "qs/ckpt/job/output_manifest.h"
#include "qs/ckpt/validate/validation.h"
#include "qs/quant/nvfp4_validation.h"

namespace qs::cli {
namespace {

struct ValidateOptions {
  std::string path;
  std::string reference;
  std::string target;  // the path is an MTP draft served beside this target
  double max_relative_error = kDefaultMaxRelativeError;
  bool checksum = false;
  bool json = false;
};

// "N <what>, relative error mean M, max X (tensor)" over `comparisons`.
std::string error_summary(const std::vector<const ReferenceComparison*>& comparisons,
                          const std::string& what) {
  double sum = 0.0, worst = 0.0;
  std::string worst_name;
  for (const auto* comparison : comparisons) {
    sum += comparison->relative_error;
    if (comparison->relative_error >= worst) {
      worst = comparison->relative_error;
      worst_name = comparison->tensor;
    }
  }
  return fmt::format("{} {}, relative error mean {:.4f}, max {:.4f} ({})", comparisons.size(), what,
                     sum / static_cast<double>(comparisons.size()), worst, worst_name);
}

// One line over every quantized weight, then, when integer weights are among them, one per
// format: INT8 (~0.008) and INT4 (~0.1) errors mean nothing averaged together.
void print_comparisons(const std::vector<ReferenceComparison>& comparisons) {
  if (comparisons.empty()) return;
  std::vector<const ReferenceComparison*> all;
  std::map<std::string, std::vector<const ReferenceComparison*>> by_format;
  for (const auto& comparison : comparisons) {
    all.push_back(&comparison);
    by_format[comparison.format].push_back(&comparison);
  }
  fmt::print("  against the reference: {}\n", error_summary(all, "quantized weights"));
  const bool integers = std::any_of(by_format.begin(), by_format.end(), [](const auto& entry) {
    return entry.first.starts_with("int");
  });
  if (!integers) return;
  for (const auto& [format, members] : by_format)
    fmt::print("    {}: {}\n", format,
               error_summary(members, format.starts_with("int") ? "integer weights" : "weights"));
}

nlohmann::ordered_json comparisons_json(const std::vector<ReferenceComparison>& comparisons) {
  auto rows = nlohmann::ordered_json::array();
  for (const auto& comparison : comparisons)
    rows.push_back({{"tensor", comparison.tensor},
                    {"format", comparison.format},
                    {"relative_error", comparison.relative_error},
                    {"snr_db", comparison.snr_db}});
  return rows;
}

// --target: every draft Linear must hold what vLLM builds it as beside the target (it reads
// only the target's quantization config for the draft).
void check_against_target(const Checkpoint& draft, const TargetQuantization& target,
                          ValidationReport& report) {
  report.checks_run.push_back("target");
  for (const auto& mismatch : check_draft_against_target(draft, target))
    report.add(Severity::Problem, "target", "target.scheme_mismatch", mismatch.message,
               mismatch.file, mismatch.tensor);
}

// Known engine incompatibilities, as warnings: the config vLLM builds the checkpoint with is
// its own, or for a draft the target's.
std::vector<QuirkHit> check_engine_quirks(const Checkpoint& checkpoint,
                                          const std::optional<TargetQuantization>& target,
                                          ValidationReport& report) {
  std::optional<CompressedTensorsConfig> config;
  if (target) {
    if (target->format == TargetQuantization::Format::CompressedTensors)
      config = target->compressed_tensors;
  } else if (const auto& json = checkpoint.config();
             json.is_object() && json.contains("quantization_config") &&
             json["quantization_config"].is_object() &&
             json["quantization_config"].value("quant_method", std::string()) ==
                 "compressed-tensors") {
    try {
      config = parse_compressed_tensors_config(json["quantization_config"]);
    } catch (const std::exception&) {  // the config check reports an unreadable config
    }
  }
  if (!config) return {};
  report.checks_run.push_back("engine");
  auto hits = evaluate_engine_quirks(quirk_subjects(checkpoint, *config));
  for (const auto& hit : hits)
    report.add(Severity::Warning, "engine", fmt::format("engine.{}", hit.quirk->id), hit.message(),
               (checkpoint.directory() / "config.json").string(), hit.units.front());
  return hits;
}

nlohmann::ordered_json quirks_json(const std::vector<QuirkHit>& hits) {
  auto rows = nlohmann::ordered_json::array();
  for (const auto& hit : hits)
    rows.push_back({{"id", hit.quirk->id},
                    {"engine", hit.quirk->engine},
                    {"versions", hit.quirk->versions},
                    {"hardware", hit.quirk->hardware},
                    {"problem", hit.quirk->problem},
                    {"workaround", hit.quirk->workaround},
                    {"config_group", hit.group},
                    {"modules", hit.units}});
  return rows;
}

const char* severity_name(Severity severity) {
  return severity == Severity::Problem ? "problem" : "warning";
}

nlohmann::ordered_json report_json(const Checkpoint& checkpoint, const ValidationReport& report) {
  nlohmann::ordered_json out;
  out["path"] = checkpoint.directory().string();
  out["valid"] = !report.has_problems();
  out["shards"] = checkpoint.shards().size();
  out["tensors"] = checkpoint.tensors().size();
  out["checks"] = report.checks_run;
  out["findings"] = nlohmann::ordered_json::array();
  for (const auto& finding : report.findings)
    out["findings"].push_back({{"severity", severity_name(finding.severity)},
                               {"check", finding.check},
                               {"kind", finding.kind},
                               {"file", finding.file},
                               {"tensor", finding.tensor},
                               {"message", finding.message}});
  if (!report.scans.empty()) {
    auto& files = out["files"] = nlohmann::ordered_json::object();
    for (const auto& [name, scan] : report.scans)
      files[name] = {{"bytes", scan.bytes}, {"xxh3_128", scan.xxh3_128}};
  }
  return out;
}

void print_report(const Checkpoint& checkpoint, const ValidationReport& report) {
  fmt::print("validate {}: {} shard(s), {} tensors, {}\n", checkpoint.directory().string(),
             checkpoint.shards().size(), checkpoint.tensors().size(),
             human_bytes(checkpoint.tensor_bytes()));
  fmt::print("  checks: {}\n", fmt::join(report.checks_run, ", "));
  for (const auto& [name, scan] : report.scans)
    fmt::print("  {}  xxh3-128 {}  {}\n", name, scan.xxh3_128, human_bytes(scan.bytes));
  std::size_t problems = 0, warnings = 0;
  for (const auto& finding : report.findings) {
    (finding.severity == Severity::Problem ? problems : warnings) += 1;
    std::string where = finding.tensor.empty() ? finding.file : finding.tensor;
    fmt::print("  {:<8} {:<32} {}{}\n", severity_name(finding.severity), finding.kind,
               where.empty() ? "" : where + ": ", finding.message);
  }
  fmt::print("result: {} ({} problem(s), {} warning(s))\n", problems ? "INVALID" : "valid",
             problems, warnings);
}

// The VQ modules' bits per weight (codes and scales), per tier: nullopt when there are none.
std::optional<VqUsage> vq_usage_of(const Checkpoint& checkpoint) {
  VqDeclaration declaration;
  try {
    declaration = VqDeclaration::of(checkpoint);
  } catch (const Error&) {  // the vq check reported it; count the modules as undeclared
  }
  auto usage = vq_usage(checkpoint, declaration);
  if (usage.total.modules == 0) return std::nullopt;
  return usage;
}

void print_vq_usage(const VqUsage& usage) {
  std::vector<std::string> tiers;
  for (const auto& [tier, counted] : usage.tiers)
    tiers.push_back(fmt::format("{} {} modules {:.3f} bpw", tier, counted.modules,
                                counted.bits_per_weight()));
  fmt::print("  vq: {} modules, {:.3f} bits per weight ({})\n", usage.total.modules,
             usage.total.bits_per_weight(), fmt::join(tiers, "; "));
}

nlohmann::ordered_json vq_usage_json(const VqUsage& usage) {
  auto row = [](const VqTierUsage& counted) {
    return nlohmann::ordered_json{{"modules", counted.modules},
                                  {"weights", counted.weights},
                                  {"bytes", counted.bytes},
                                  {"bits_per_weight", counted.bits_per_weight()}};
  };
  nlohmann::ordered_json out;
  out["total"] = row(usage.total);
  for (const auto& [tier, counted] : usage.tiers) out["tiers"][tier] = row(counted);
  return out;
}

// --checksum on a checkpoint we wrote: every file against quantsmith-manifest.json (shards by
// the digests the scan just computed, small files hashed here). Each differing file is a
// problem; no manifest is not one (checkpoints from elsewhere have none).
ManifestCheck check_against_manifest(const std::string& path, const Checkpoint& checkpoint,
                                     ValidationReport& report) {
  Manifest computed;
  for (const auto& [name, scan] : report.scans) computed[name] = {scan.bytes, scan.xxh3_128};
  std::vector<std::string> only;
  std::error_code error;
  if (std::filesystem::is_regular_file(path, error))
    only.push_back(std::filesystem::path(path).filename().string());
  auto check = qs::check_manifest(checkpoint.directory(), computed, only);
  if (check.present) report.checks_run.push_back("manifest");
  for (const auto& mismatch : check.mismatches)
    report.add(Severity::Problem, "manifest", mismatch.kind, mismatch.message,
               (checkpoint.directory() / mismatch.file).string());
  return check;
}

}  // namespace

SubcommandRunner register_validate(CLI::App& app) {
  auto options = std::make_shared<ValidateOptions>();
  auto* command = app.add_subcommand(
      "validate",
      "Check a checkpoint's structure (headers, index, shapes against config.json) and, with "
      "--checksum, its data. Exit code: 0 valid, 1 problems found, 2 unreadable.");
  command->add_option("path", options->path, "checkpoint directory or .safetensors file")
      ->required();
  command->add_flag("--checksum", options->checksum,
                    "read all data: per-file xxh3-128 hash and NaN/Inf counts per tensor, and "
                    "every file against quantsmith-manifest.json when the checkpoint has one");
  command->add_flag("--json", options->json, "machine-readable report on stdout");
  command->add_option("--ref", options->reference,
                      "BF16 checkpoint the quantized one came from: dequantized NVFP4 and "
                      "pack-quantized integer weights are compared with it (relative L2 "
                      "error), kept tensors must equal it");
  auto* limit = command->add_option(
      "--max-relative-error", options->max_relative_error,
      "with --ref: largest accepted relative error per quantized weight (default 0.2; VQ "
      "weights, 1 to 3 bits, are held to it only when it is given)");
  command->add_option("--target", options->target,
                      "PATH is an MTP draft to serve beside TARGET (a checkpoint directory or "
                      "its config.json): vLLM builds the draft with the target's quantization "
                      "config, so every draft Linear must hold the scheme that config resolves "
                      "it to (target.scheme_mismatch)");

  return [options, limit]() {
    auto checkpoint = Checkpoint::open(options->path);
    ValidationOptions validation;
    validation.checksum = options->checksum;
    ProgressLine progress("validate --checksum", checkpoint.file_bytes());
    auto report = validate_checkpoint(checkpoint, validation,
                                      [&](std::uint64_t bytes) { progress.update(bytes); });
    progress.finish();
    std::optional<ManifestCheck> manifest;
    if (options->checksum) manifest = check_against_manifest(options->path, checkpoint, report);
    std::optional<Checkpoint> reference;
    if (!options->reference.empty()) reference = Checkpoint::open(options->reference);
    const auto comparisons = validate_nvfp4(
        checkpoint,
        {reference ? &*reference : nullptr, options->max_relative_error, limit->count() > 0},
        report);
    std::optional<TargetQuantization> target;
    if (!options->target.empty()) {
      target = read_target_quantization(options->target);
      check_against_target(checkpoint, *target, report);
    }
    const auto quirks = check_engine_quirks(checkpoint, target, report);
    const auto vq = vq_usage_of(checkpoint);
    double seconds = std::max(progress.elapsed_seconds(), 1e-9);
    if (options->json) {
      auto json = report_json(checkpoint, report);
      json["engine_quirks"] = quirks_json(quirks);
      if (reference) json["reference_comparisons"] = comparisons_json(comparisons);
      if (vq) json["vq"] = vq_usage_json(*vq);
      if (manifest)
        json["manifest"] = {{"present", manifest->present},
                            {"files_verified", manifest->files_verified}};
      if (options->checksum)
        json["read"] = {{"bytes", checkpoint.file_bytes()},
                        {"seconds", seconds},
                        {"gb_per_s", checkpoint.file_bytes() / 1e9 / seconds}};
      fmt::print("{}\n", json.dump(2));
    } else {
      print_report(checkpoint, report);
      print_comparisons(comparisons);
      if (vq) print_vq_usage(*vq);
      if (manifest && manifest->present)
        fmt::print("manifest: {} file(s) checked against {}\n", manifest->files_verified,
                   kManifestFileName);
      else if (manifest)
        fmt::print("manifest: none ({} is written by quantsmith jobs), digests not verified\n",
                   kManifestFileName);
      if (options->checksum)
        fmt::print("read {:.2f} GB in {:.2f} s ({:.2f} GB/s)\n", checkpoint.file_bytes() / 1e9,
                   seconds, checkpoint.file_bytes() / 1e9 / seconds);
    }
    return report.has_problems() ? kExitProblems : kExitOk;
  };
}

}  // namespace qs::cli
