// quantsmith calibrate MODEL --tokens F --out STATS: per-Linear input statistics (XᵀX, token
// counts) and expert routing counts for calibrated quantizers.

#include <fmt/format.h>
#include <tbb/global_control.h>

#include <filesystem>
#include <memory>
#include <optional>

#include "cli_support.h"
#include "progress_line.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/job/output_directory.h"
#include "qs/ckpt/validate/validation.h"
#include "qs/run/calibration.h"

namespace qs::cli {
namespace {

struct CalibrateOptions {
  std::string model;
  std::string tokens;
  std::string output;
  std::uint64_t max_rows = 0;
  bool all_experts = false;
  bool no_mtp = false;
  std::string device = "auto";
  std::string precision = "f64";
  std::size_t threads = 0;
};

}  // namespace

SubcommandRunner register_calibrate(CLI::App& app) {
  auto options = std::make_shared<CalibrateOptions>();
  auto* command = app.add_subcommand(
      "calibrate",
      "Run a model over calibration tokens, layer by layer, and store per Linear the input "
      "second moments XᵀX (summed in f64; stored as the upper triangle in f64 or f32) and token "
      "counts, plus expert routing counts.");
  command->add_option("model", options->model, "checkpoint (any format we read)")->required();
  command
      ->add_option("--tokens", options->tokens,
                   "safetensors file of I32 token ids [rows, seq], optionally FILE:TENSOR")
      ->required();
  command->add_option("--out", options->output, "statistics file to write")->required();
  command->add_option("--max-rows", options->max_rows, "use only the first N rows");
  command->add_flag("--all-experts", options->all_experts,
                    "route every token through every expert for the statistics (the layer "
                    "output still uses the real top-k); gate/up inputs are then stored once");
  command->add_flag("--no-mtp", options->no_mtp, "skip the MTP layer");
  command
      ->add_option("--precision", options->precision,
                   "how the matrices are stored: f64 (default, exact sums) or f32 (half the "
                   "file; each sum rounded to f32, as the quantizers' f32 Hessians are)")
      ->check(CLI::IsMember({"f64", "f32"}));
  command->add_option("--device", options->device, "auto (GPU when usable), cpu or cuda");
  command->add_option("--threads", options->threads,
                      "CPU threads (default: all cores; results do not depend on it)");
  return [options]() {
    std::optional<tbb::global_control> thread_limit;
    if (options->threads > 0)
      thread_limit.emplace(tbb::global_control::max_allowed_parallelism, options->threads);
    const auto checkpoint = Checkpoint::open(options->model);
    // Before the statistics file's directory is created (the runner checks it again).
    require_layout_matches_config(checkpoint);
    // Never write into the model being read.
    check_output_directory(options->output, {checkpoint.directory()});
    const auto tokens = run::read_tokens_argument(options->tokens, "calib", options->max_rows);
    // A statistics file in a directory that does not exist yet (a batch recipe's work dir).
    const auto parent = std::filesystem::path(options->output).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    ProgressLine progress("calibrate", 0, 0);
    run::CalibrationOptions calibration;
    calibration.all_experts = options->all_experts;
    calibration.include_mtp = !options->no_mtp;
    calibration.precision = *parse_statistics_precision(options->precision);
    calibration.device =
        runner_uses_cuda(options->device) ? run::GemmDevice::Cuda : run::GemmDevice::Cpu;
    calibration.on_progress = [&](std::uint64_t done, std::uint64_t total) {
      progress.set_steps(total, "layers");
      progress.update(0, done);
    };
    const auto summary = run::calibrate(checkpoint, tokens, options->output, calibration);
    progress.finish();
    fmt::print(
        "calibrated {} on {} tokens: {} modules ({} matrices stored{}, {}) → {} ({:.1f} MB) in "
        "{:.2f} s; peak statistics memory {:.1f} MB (one layer)\n",
        options->model, summary.token_rows, summary.modules, summary.stored_matrices,
        options->all_experts ? ", expert gate/up inputs shared" : "", options->precision,
        options->output, std::filesystem::file_size(options->output) / 1e6,
        progress.elapsed_seconds(), summary.peak_statistics_bytes / 1e6);
    return kExitOk;
  };
}

}  // namespace qs::cli
