#pragma once
// `validate`: a table of checks over an opened checkpoint, each adding findings to a report.
// Later formats add their checks to the table; the CLI only prints the report.

#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/shard_scan.h"

namespace qs {

enum class Severity { Warning, Problem };

struct Finding {
  Severity severity;
  std::string check;   // which check found it, e.g. "layout"
  std::string kind;    // stable identifier, e.g. "layout.missing_tensor"
  std::string file;    // may be empty
  std::string tensor;  // may be empty
  std::string message;
};

struct ValidationReport {
  std::vector<Finding> findings;
  std::vector<std::string> checks_run;
  std::vector<std::pair<std::string, ShardScan>> scans;  // shard file name → scan (--checksum)

  bool has_problems() const;
  void add(Severity severity, std::string check, std::string kind, std::string message,
           std::string file = {}, std::string tensor = {});
};

struct ValidationOptions {
  bool checksum = false;  // read every byte: hashes and NaN/Inf counts
};

// Runs every structural check (headers only) and, with options.checksum, the data scan.
ValidationReport validate_checkpoint(
    const Checkpoint& checkpoint, const ValidationOptions& options,
    const std::function<void(std::uint64_t)>& on_bytes_scanned = {});

// For jobs that read a checkpoint (quantize, splice, mtp extract / inject, calibrate, eval,
// generate), before they plan: the checks `validate` runs on config.json and the layout
// (config.json present; every tensor's name, shape and dtype, a quantized module's by its
// logical shape, against the architecture it describes). Throws BadInput
// "layout.config_mismatch" naming the first problem's file and tensor and counting the others,
// or the fp8.* error of fp8_block_sources.h for a malformed FP8 block-scaled module.
// Warnings (a model_type we do not know the layout of, a float dtype choice) do not stop a job.
void require_layout_matches_config(const Checkpoint& checkpoint);

}  // namespace qs
