// quantsmith validate PATH: structure, format and numeric sanity of a checkpoint, with an
// exit code for CI (0 valid, 1 problems found, 2 unreadable).

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "progress_line.h"
#include "qs/ckpt/checkpoint.h"
#include "qs/ckpt/validation.h"

namespace qs::cli {
namespace {

struct ValidateOptions {
  std::string path;
  bool checksum = false;
  bool json = false;
};

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
                    "read all data: per-file xxh3-128 hash and NaN/Inf counts per tensor");
  command->add_flag("--json", options->json, "machine-readable report on stdout");

  return [options]() {
    auto checkpoint = Checkpoint::open(options->path);
    ValidationOptions validation;
    validation.checksum = options->checksum;
    ProgressLine progress("validate --checksum", checkpoint.file_bytes());
    auto report = validate_checkpoint(checkpoint, validation,
                                      [&](std::uint64_t bytes) { progress.update(bytes); });
    progress.finish();
    double seconds = std::max(progress.elapsed_seconds(), 1e-9);
    if (options->json) {
      auto json = report_json(checkpoint, report);
      if (options->checksum)
        json["read"] = {{"bytes", checkpoint.file_bytes()},
                        {"seconds", seconds},
                        {"gb_per_s", checkpoint.file_bytes() / 1e9 / seconds}};
      fmt::print("{}\n", json.dump(2));
    } else {
      print_report(checkpoint, report);
      if (options->checksum)
        fmt::print("read {:.2f} GB in {:.2f} s ({:.2f} GB/s)\n", checkpoint.file_bytes() / 1e9,
                   seconds, checkpoint.file_bytes() / 1e9 / seconds);
    }
    return report.has_problems() ? kExitProblems : kExitOk;
  };
}

}  // namespace qs::cli
