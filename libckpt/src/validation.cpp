#include "qs/ckpt/validation.h"

#include <array>

#include <fmt/format.h>

namespace qs {
namespace {

using Check = void (*)(const Checkpoint&, ValidationReport&);

// huggingface_hub writes the sum of tensor bytes; some exporters write the sum of file sizes.
// Both are accepted; anything else misleads download tools and loaders that preallocate.
void check_index_total_size(const Checkpoint& checkpoint, ValidationReport& report) {
  if (!checkpoint.has_index()) return;
  const auto& index = checkpoint.index();
  std::string index_file = (checkpoint.directory() / kIndexFileName).string();
  if (!index.contains("metadata") || !index["metadata"].contains("total_size")) {
    report.add(Severity::Warning, "index", "index.no_total_size",
               "has no metadata.total_size", index_file);
    return;
  }
  const auto& value = index["metadata"]["total_size"];
  if (!value.is_number_unsigned()) {
    report.add(Severity::Problem, "index", "index.total_size_invalid",
               "metadata.total_size is not a non-negative integer", index_file);
    return;
  }
  auto total = value.get<std::uint64_t>();
  if (total == checkpoint.tensor_bytes()) return;
  if (total == checkpoint.file_bytes()) {
    report.add(Severity::Warning, "index", "index.total_size_is_file_bytes",
               "metadata.total_size counts whole files, not tensor bytes", index_file);
    return;
  }
  report.add(Severity::Problem, "index", "index.total_size_mismatch",
             fmt::format("metadata.total_size is {} but the tensors hold {} bytes", total,
                         checkpoint.tensor_bytes()),
             index_file);
}

void check_config_present(const Checkpoint& checkpoint, ValidationReport& report) {
  std::string config_file = (checkpoint.directory() / "config.json").string();
  const auto& config = checkpoint.config();
  if (config.is_null()) {
    report.add(Severity::Warning, "config", "config.missing",
               "no config.json: shapes cannot be checked against the architecture", config_file);
    return;
  }
  if (!config.is_object() || !config.contains("model_type"))
    report.add(Severity::Problem, "config", "config.no_model_type",
               "config.json has no model_type", config_file);
}

constexpr std::array<Check, 2> kStructuralChecks{
    check_index_total_size,
    check_config_present,
};

}  // namespace

bool ValidationReport::has_problems() const {
  for (const auto& finding : findings)
    if (finding.severity == Severity::Problem) return true;
  return false;
}

void ValidationReport::add(Severity severity, std::string check, std::string kind,
                           std::string message, std::string file, std::string tensor) {
  findings.push_back({severity, std::move(check), std::move(kind), std::move(file),
                      std::move(tensor), std::move(message)});
}

ValidationReport validate_checkpoint(const Checkpoint& checkpoint, const ValidationOptions& options,
                                     const std::function<void(std::uint64_t)>& on_bytes_scanned) {
  ValidationReport report;
  report.checks_run = {"headers", "index"};
  for (auto check : kStructuralChecks) check(checkpoint, report);
  report.checks_run.push_back("config");

  if (options.checksum) {
    report.checks_run.push_back("checksum");
    std::uint64_t scanned_before = 0;
    for (const auto& shard : checkpoint.shards()) {
      auto scan = scan_shard(*shard, {}, [&](std::uint64_t bytes) {
        if (on_bytes_scanned) on_bytes_scanned(scanned_before + bytes);
      });
      scanned_before += scan.bytes;
      for (const auto& count : scan.non_finite)
        report.add(Severity::Problem, "checksum", "data.non_finite",
                   fmt::format("{} NaN and {} Inf values", count.nan, count.inf),
                   shard->path().string(), count.tensor);
      report.scans.emplace_back(shard->path().filename().string(), std::move(scan));
    }
  }
  return report;
}

}  // namespace qs
