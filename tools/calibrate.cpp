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
  std::size_t threads = 0;
};

}  // namespace

SubcommandRunner register_calibrate(CLI::App& app) {
  auto options = std::make_shared<CalibrateOptions>();
  auto* command = app.add_subcommand(
      "calibrate",
      "Run a model over calibration tokens, layer by layer, and store per Linear the input "
      "second moments XᵀX (f64) and token counts, plus expert routing counts.");
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
    calibration.device =
        runner_uses_cuda(options->device) ? run::GemmDevice::Cuda : run::GemmDevice::Cpu;
    calibration.on_progress = [&](std::uint64_t done, std::uint64_t total) {
      progress.set_steps(total, "layers");
      progress.update(0, done);
    };
    const auto summary = run::calibrate(checkpoint, tokens, options->output, calibration);
    progress.finish();
    fmt::print("calibrated {} on {} tokens: {} modules ({} matrices stored{}) → {} in {:.2f} s\n",
               options->model, summary.token_rows, summary.modules, summary.stored_matrices,
               options->all_experts ? ", expert gate/up inputs shared" : "", options->output,
               progress.elapsed_seconds());
    return kExitOk;
  };
}

}  // namespace qs::cli
