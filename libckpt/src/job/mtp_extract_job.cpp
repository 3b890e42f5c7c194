#include "qs/ckpt/job/mtp_extract_job.h"

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/io/file_io.h"

namespace qs {
namespace {

// Where the dequantized draft waits while it is requantized: inside OUT, so a resumed run
// finds it, and hidden, so nothing mistakes it for the result.
constexpr const char* kStagingDirectory = ".quantsmith-staging";
// Written into OUT when the requantization has finished (hidden: not part of the checkpoint).
constexpr const char* kFinishedRequantizationRecord = ".quantsmith-mtp-extract-finished";

ExecutionOptions stage_execution(const std::filesystem::path& output,
                                 const MtpExtractJobOptions& options,
                                 const std::string& fingerprint) {
  ExecutionOptions execution;
  execution.output_directory = output;
  execution.max_shard_bytes = options.max_shard_bytes;
  execution.resume = options.mode == OutputMode::Resume;
  execution.fingerprint = fingerprint;
  return execution;
}

}  // namespace

MtpExtractJobResult run_mtp_extract_job(const Checkpoint& source, const MtpExtractPlan& planned,
                                        const MtpExtractJobOptions& options,
                                        const RecipeQuantizerFactory& make_quantizer,
                                        const PlanRunner& run_plan) {
  const auto& output = options.output;
  const auto& recipe = options.requant;
  const bool resume = options.mode == OutputMode::Resume;
  if (options.partition && recipe)
    throw_bad_input("cli.partition_unsupported",
                    "--partition splits the BF16 extraction only: a requantized draft's second "
                    "stage reads the whole staged draft (one layer; run it as one process)");
  // The stage that writes OUT itself runs on this claim; a part claims OUT in the executor,
  // shared with the other parts.
  std::optional<OutputDirectory> claimed;
  if (!options.partition)
    claimed.emplace(OutputDirectory::claim(output, options.mode,
                                           {kStagingDirectory, kFinishedRequantizationRecord}));
  // The BF16 draft depends on the source and --with-head only, so a resumed run may requantize
  // a staged draft with another scheme; the requantized one depends on the recipe too.
  const std::string bf16_fingerprint =
      fmt::format("quantsmith {}|mtp extract|head={}", kQuantsmithVersion, options.with_head);
  const std::string requant_fingerprint = bf16_fingerprint + options.requant_identity;
  const auto bf16_directory = recipe ? output / kStagingDirectory : output;
  // The requantization's plan reads the staged draft, whose files a rerun rewrites (new
  // times): a finished requantized draft is recognised by this record instead, so that
  // --resume on it is a no-op as it is for `quantize`.
  const auto finished_record = output / kFinishedRequantizationRecord;
  const std::string finished_fingerprint = plan_fingerprint(planned.plan, requant_fingerprint);
  MtpExtractJobResult result;
  if (recipe && resume && output_path_exists(finished_record)) {
    if (read_text_file(finished_record) != finished_fingerprint)
      throw_bad_input("job.fingerprint_mismatch",
                      "the output holds a requantized draft made from other inputs or options; "
                      "use --force to start over or choose another output directory",
                      finished_record.string());
    remove_output_entry(bf16_directory);  // a kill may have left part of it
    result.already_complete = true;
    return result;
  }
  auto extraction = stage_execution(bf16_directory, options, bf16_fingerprint + "|stage=bf16");
  if (options.partition) {
    extraction.partition = options.partition;
    extraction.force = options.mode == OutputMode::Force;  // refused for a part, with its reason
  } else if (!recipe) {
    extraction.claimed_output = &*claimed;
  }
  QuantizedModel none;
  extraction.extra_files = output_config_files(source, none, std::nullopt);
  result.report = run_plan(planned.plan, extraction, "mtp extract");
  result.seconds = result.report.seconds;
  result.bytes_written = result.report.bytes_written;
  if (result.report.interrupted || !recipe) return result;

  // The quantize planner over the BF16 draft, exactly as `quantize` runs it.
  auto draft = Checkpoint::open(bf16_directory);
  const auto requantized = plan_quantization(draft, *recipe, make_quantizer(*recipe));
  result.requantized_linears = quantized_linear_count(requantized.model);
  // A full-model recipe usually keeps MTP layers BF16 (`mtp: true` → keep): requantizing
  // with it would silently give the BF16 draft.
  if (result.requantized_linears == 0)
    throw_bad_input("mtp.requant_nothing",
                    fmt::format("{} quantizes none of the draft's Linears (a rule keeping MTP "
                                "layers?); the BF16 draft is staged in {}, --resume with "
                                "another --requant or --recipe uses it",
                                recipe->source, bf16_directory.string()),
                    output.string());
  // The staged draft's files are rewritten by every run: they are identified by the first
  // stage's fingerprint (which covers the real sources), not by their times, so two
  // identical runs leave identical job files.
  auto requantization = stage_execution(
      output, options,
      fmt::format("{}|stage=requant|draft={}", requant_fingerprint, finished_fingerprint));
  requantization.claimed_output = &*claimed;
  requantization.fingerprint_source_times = false;
  requantization.extra_files = output_config_files(draft, requantized.model, recipe->format);
  result.report = run_plan(requantized.plan, requantization, "mtp requantize");
  if (result.report.interrupted) return result;
  write_file_atomically(finished_record, finished_fingerprint);
  remove_output_entry(bf16_directory);
  result.seconds += result.report.seconds;
  result.bytes_written = result.report.bytes_written;
  return result;
}

}  // namespace qs
