// quantsmith eval --ref REF --model M --tokens F: how far a (quantized) model's outputs are
// from its reference's, as llama-perplexity --kl-divergence reports it, plus decode-side
// Jensen–Shannon divergence and MTP acceptance.

#include <fmt/format.h>
#include <tbb/global_control.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli_support.h"
#include "progress_line.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/run/evaluation.h"

namespace qs::cli {
namespace {

// What eval reports for MTP acceptance when the model has no MTP layer (qwen3_moe).
constexpr const char* kNoMtpLayer = "no MTP layer";

struct EvalOptions {
  std::string reference;
  std::string model;
  std::string tokens;
  std::uint64_t max_rows = 0;
  std::uint64_t decode_steps = 32;
  bool json = false;
  std::string device = "auto";
  std::size_t threads = 0;
};

nlohmann::ordered_json percentiles_json(const run::Percentiles& p) {
  return {{"min", p.min}, {"p01", p.p01},       {"p05", p.p05},    {"p10", p.p10},
          {"p25", p.p25}, {"median", p.median}, {"p75", p.p75},    {"p90", p.p90},
          {"p95", p.p95}, {"p99", p.p99},       {"p99.9", p.p999}, {"max", p.max}};
}

nlohmann::ordered_json report_json(const run::EvaluationReport& report) {
  const auto& d = report.divergence;
  nlohmann::ordered_json out;
  out["positions"] = d.positions;
  out["kld"] = {{"mean", d.kld.mean}, {"error", d.kld.error}};
  out["kld_percentiles"] = percentiles_json(d.kld_percentiles);
  out["top1_agreement"] = {{"mean", d.top1_agreement.mean}, {"error", d.top1_agreement.error}};
  out["delta_p"] = {{"mean", d.delta_p.mean}, {"error", d.delta_p.error}, {"rms", d.delta_p_rms}};
  out["delta_p_percentiles"] = percentiles_json(d.delta_p_percentiles);
  out["ppl"] = {{"reference", d.reference_ppl},
                {"model", d.test_ppl},
                {"ratio", d.ppl_ratio},
                {"ln_ratio", {{"mean", d.log_ppl_ratio.mean}, {"error", d.log_ppl_ratio.error}}}};
  if (report.has_mtp)
    out["mtp_acceptance"] = {{"reference", report.reference_mtp_acceptance},
                             {"model", report.test_mtp_acceptance}};
  else
    out["mtp_acceptance"] = kNoMtpLayer;
  if (report.decode_steps)
    out["decode"] = {{"steps", report.decode_steps},
                     {"js_mean", report.decode_js.mean},
                     {"js_error", report.decode_js.error},
                     {"js_max", report.decode_js_max},
                     {"top1_same", report.decode_top1_same}};
  return out;
}

void print_report(const run::EvaluationReport& report) {
  const auto& d = report.divergence;
  const auto& k = d.kld_percentiles;
  const auto& p = d.delta_p_percentiles;
  fmt::print("positions            {}\n", d.positions);
  fmt::print("PPL(ref)             {:.4f}\n", d.reference_ppl);
  fmt::print("PPL(model)           {:.4f}\n", d.test_ppl);
  fmt::print("PPL ratio            {:.6f}  (ln ratio {:.6f} ± {:.6f})\n", d.ppl_ratio,
             d.log_ppl_ratio.mean, d.log_ppl_ratio.error);
  fmt::print("mean KLD             {:.6f} ± {:.6f}\n", d.kld.mean, d.kld.error);
  fmt::print(
      "KLD percentiles      median {:.6f}  90% {:.6f}  95% {:.6f}  99% {:.6f}  99.9% {:.6f}"
      "  max {:.6f}\n",
      k.median, k.p90, k.p95, k.p99, k.p999, k.max);
  fmt::print("same top token       {:.4f} ± {:.4f}\n", d.top1_agreement.mean,
             d.top1_agreement.error);
  fmt::print("mean Δp              {:.5f} ± {:.5f}  (RMS {:.5f})\n", d.delta_p.mean,
             d.delta_p.error, d.delta_p_rms);
  fmt::print(
      "Δp percentiles       1% {:.5f}  5% {:.5f}  median {:.5f}  95% {:.5f}  99% {:.5f}"
      "  min {:.5f}  max {:.5f}\n",
      p.p01, p.p05, p.median, p.p95, p.p99, p.min, p.max);
  if (report.has_mtp)
    fmt::print("MTP acceptance       ref {:.4f}  model {:.4f}\n", report.reference_mtp_acceptance,
               report.test_mtp_acceptance);
  else
    fmt::print("MTP acceptance       {}\n", kNoMtpLayer);
  if (report.decode_steps)
    fmt::print(
        "decode JS            {:.6f} ± {:.6f} (max {:.6f}) over {} greedy steps, top-1 "
        "same {}/{}\n",
        report.decode_js.mean, report.decode_js.error, report.decode_js_max, report.decode_steps,
        report.decode_top1_same, report.decode_steps);
}

}  // namespace

SubcommandRunner register_eval(CLI::App& app) {
  auto options = std::make_shared<EvalOptions>();
  auto* command = app.add_subcommand(
      "eval",
      "Compare a model with its reference on the same tokens: KLD, top-1 agreement, Δp, "
      "perplexity (as llama-perplexity --kl-divergence), decode JS divergence, MTP acceptance. "
      "Both models advance one layer at a time.");
  command->add_option("--ref", options->reference, "reference checkpoint (e.g. the BF16 source)")
      ->required();
  command->add_option("--model", options->model, "checkpoint to evaluate (any format we read)")
      ->required();
  command
      ->add_option("--tokens", options->tokens,
                   "safetensors file of I32 token ids [rows, seq], optionally FILE:TENSOR "
                   "(default tensor: the only one, or heldout)")
      ->required();
  command->add_option("--max-rows", options->max_rows, "use only the first N rows");
  command->add_option("--decode-steps", options->decode_steps,
                      "greedy decode steps for the JS divergence (default 32, 0 skips)");
  command->add_flag("--json", options->json, "machine-readable report on stdout");
  command->add_option("--device", options->device, "auto (GPU when usable), cpu or cuda");
  command->add_option("--threads", options->threads,
                      "CPU threads (default: all cores; results do not depend on it)");
  return [options]() {
    std::optional<tbb::global_control> thread_limit;
    if (options->threads > 0)
      thread_limit.emplace(tbb::global_control::max_allowed_parallelism, options->threads);
    const auto reference = Checkpoint::open(options->reference);
    const auto model = Checkpoint::open(options->model);
    const auto tokens = run::read_tokens_argument(options->tokens, "", options->max_rows);
    run::EvaluationOptions evaluation;
    evaluation.decode_steps = options->decode_steps;
    evaluation.device =
        runner_uses_cuda(options->device) ? run::GemmDevice::Cuda : run::GemmDevice::Cpu;
    ProgressLine progress("eval", 0, 0);
    evaluation.on_progress = [&](const std::string& stage, std::uint64_t done,
                                 std::uint64_t total) {
      progress.set_steps(total, stage == "layers" ? "layers" : stage + " steps");
      progress.update(0, done);
    };
    const auto report = run::evaluate(reference, model, tokens, evaluation);
    progress.finish();
    if (options->json) {
      fmt::print("{}\n", report_json(report).dump(2));
    } else {
      fmt::print("eval {} against {}: {} rows × {} tokens\n", options->model, options->reference,
                 tokens.rows, tokens.seq);
      print_report(report);
    }
    return kExitOk;
  };
}

}  // namespace qs::cli
