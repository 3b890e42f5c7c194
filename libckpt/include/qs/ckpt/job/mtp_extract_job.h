#pragma once
// The `mtp extract` job: the draft plan_mtp_extract made (plan/mtp_extract_plan.h) written to
// OUT, and with a requantization recipe requantized in a second stage:
//   1. the BF16 draft, into OUT/.quantsmith-staging (into OUT itself without a recipe);
//   2. the quantize planner over the staged draft, exactly as `quantize` runs it, into OUT;
//      then OUT/.quantsmith-mtp-extract-finished records the finished draft and the staging
//      directory is removed.
// OUT is claimed once, for both stages, under the output policy of every writing job
// (output_directory.h): checked and locked before any byte, and with --force cleared of an
// earlier job's files (the staging directory and the record are this job's too). After a kill
// each stage resumes; --resume on a finished requantized draft does nothing.
//
// Libraries own no user interface: the caller runs each stage's plan (run_plan: execute_plan,
// or a wrapper showing progress and stopping on Ctrl-C) and reports the result.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/job/executor.h"
#include "qs/ckpt/job/output_directory.h"
#include "qs/ckpt/job/partition.h"
#include "qs/ckpt/plan/mtp_extract_plan.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/ckpt/plan/recipe.h"

namespace qs {

struct MtpExtractJobOptions {
  std::filesystem::path output;
  OutputMode mode = OutputMode::Fresh;
  std::uint64_t max_shard_bytes = 5'000'000'000;
  bool with_head = false;  // as the draft was planned with
  // The recipe the draft's Linears are requantized with; none: the BF16 draft is the result.
  std::optional<Recipe> requant;
  // What chose `requant` (the flags, and the text of the files they name), appended to the
  // requantization's fingerprint: a resume under another choice is refused.
  std::string requant_identity;
  // One part of the BF16 extraction (partition.h); refused with a requantization, whose second
  // stage reads the whole staged draft ("cli.partition_unsupported").
  std::optional<Partition> partition;
};

// Runs a stage's plan; `label` names the stage ("mtp extract", "mtp requantize").
using PlanRunner = std::function<ExecutionReport(const Plan& plan, ExecutionOptions options,
                                                 const std::string& label)>;

// The quantizing transforms for `recipe` (its settings, e.g. min_snr_db, decide them).
using RecipeQuantizerFactory = std::function<QuantizeTransformFactory(const Recipe& recipe)>;

struct MtpExtractJobResult {
  // --resume found the requantized draft finished: nothing was run.
  bool already_complete = false;
  // The last stage run: interrupted when a stop request ended it (rerun with resume).
  ExecutionReport report;
  std::size_t requantized_linears = 0;
  double seconds = 0.0;             // both stages
  std::uint64_t bytes_written = 0;  // of the stage that wrote OUT
};

// Throws the output policy's errors ("output.*") and "job.*" for a resume of another job
// before writing anything, and BadInput "mtp.requant_nothing" after the first stage when the
// recipe quantizes none of the draft's Linears (the BF16 draft stays staged, so a resume with
// another recipe starts from it).
MtpExtractJobResult run_mtp_extract_job(const Checkpoint& source, const MtpExtractPlan& planned,
                                        const MtpExtractJobOptions& options,
                                        const RecipeQuantizerFactory& make_quantizer,
                                        const PlanRunner& run_plan);

}  // namespace qs
