// quantsmith quantize IN OUT: plan from a recipe (or --scheme), then stream the checkpoint
// through the executor. --dry-run stops after the plan.

#include <fmt/format.h>
#include <tbb/global_control.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "plan_execution.h"
#include "quantize_fingerprint.h"
#include "qs/ckpt/core/byte_size.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/io/shard_scan.h"
#include "qs/ckpt/job/executor.h"
#include "qs/ckpt/plan/calibration_store.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/ckpt/validate/validation.h"
#include "qs/pipeline/pipelined_quantization.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/deterministic_blas.h"
#include "qs/quant/device_selection.h"
#include "qs/quant/quantize_transforms.h"
#include "scheme_presets.h"
#include "vq_quantize.h"

namespace qs::cli {
namespace {

struct QuantizeOptions {
  std::string input;
  std::string output;
  std::string recipe;
  std::string scheme;
  std::string format;
  std::string scale_method;
  std::vector<std::string> parameters;
  bool dry_run = false;
  bool json = false;
  bool resume = false;
  bool force = false;
  std::string device = "auto";
  std::size_t threads = 0;
  std::string max_shard_size;
  std::string max_buffer = "256MiB";
  std::string nan_policy = "error";
  std::string calibration;
  std::string activations;
  std::string partition;
  // The layer-pipelined job (calibrate and quantize in one command).
  std::string calib_tokens;
  std::uint64_t calib_rows = 0;
  std::string calib_inputs;
  std::string calib_experts;
  std::string calib_memory;
};

// What --calib-tokens and its companions ask for; nullopt without --calib-tokens.
std::optional<pipeline::PipelineOptions> pipeline_options_from(const QuantizeOptions& options,
                                                               const DeviceSelection& devices,
                                                               bool partitioned) {
  const bool companions = options.calib_rows != 0 || !options.calib_inputs.empty() ||
                          !options.calib_experts.empty() || !options.calib_memory.empty();
  if (options.calib_tokens.empty()) {
    if (companions)
      throw_bad_input("cli.calib_without_tokens",
                      "--calib-rows, --calib-inputs, --calib-experts and --calib-memory go with "
                      "--calib-tokens");
    return std::nullopt;
  }
  if (!options.calibration.empty())
    throw_bad_input("cli.calib_twice",
                    "give either --calib STATS (statistics from quantsmith calibrate) or "
                    "--calib-tokens FILE (calibrate in this job), not both");
  pipeline::PipelineOptions pipelined;
  const std::string inputs = options.calib_inputs.empty() ? "sequential" : options.calib_inputs;
  if (inputs != "sequential" && inputs != "original")
    throw_bad_input("cli.bad_calib_inputs",
                    fmt::format("no --calib-inputs '{}' (sequential, original)", inputs));
  pipelined.inputs = inputs == "sequential" ? pipeline::CalibrationInputs::Sequential
                                            : pipeline::CalibrationInputs::Original;
  const std::string experts = options.calib_experts.empty() ? "all" : options.calib_experts;
  if (experts != "all" && experts != "routed")
    throw_bad_input("cli.bad_calib_experts",
                    fmt::format("no --calib-experts '{}' (all, routed)", experts));
  pipelined.all_experts = experts == "all";
  if (partitioned && pipelined.inputs == pipeline::CalibrationInputs::Sequential)
    throw_bad_input("cli.partition_sequential",
                    "--partition splits the layers between processes, but sequential calibration "
                    "needs every earlier layer's quantized weights; use --calib-inputs original "
                    "(each part then calibrates the layers it writes)");
  // The forward's GEMMs run on the first device the job was given.
  pipelined.device =
      devices.device == ComputeDevice::Cuda ? run::GemmDevice::Cuda : run::GemmDevice::Cpu;
  // A line per finished layer on stderr (clearing the executor's in-place progress line).
  pipelined.on_layer = [terminal = ::isatty(STDERR_FILENO) == 1](std::uint32_t done,
                                                                 std::uint32_t total) {
    fmt::print(stderr, "{}quantsmith: layer {}/{} calibrated and quantized\n",
               terminal ? "\r\033[K" : "", done, total);
  };
  return pipelined;
}

// The default budget for one layer's statistics and activations: the whole-job RAM
// goal for GLM-5 (64 GB), which all-experts statistics of a GLM-5 layer (≈ 9 GB) fit.
constexpr const char* kDefaultCalibMemory = "64GiB";

Recipe recipe_from(const QuantizeOptions& options) {
  if (options.recipe.empty() == options.scheme.empty())
    throw_bad_input("cli.recipe_or_scheme", "give exactly one of --recipe FILE or --scheme S");
  Recipe recipe;
  if (!options.recipe.empty()) {
    recipe = load_recipe(options.recipe, parse_parameters(options.parameters));
  } else {
    if (!options.parameters.empty())
      throw_bad_input("cli.bad_param", "--param needs a --recipe that declares parameters");
    recipe = parse_recipe(scheme_recipe_text(options.scheme), "--scheme " + options.scheme);
  }
  if (!options.format.empty()) {
    auto format = parse_output_format(options.format);
    if (!format)
      throw_bad_input("cli.unknown_format", fmt::format("no format '{}' (modelopt, "
                                                        "compressed-tensors)",
                                                        options.format));
    recipe.format = *format;
  }
  if (!options.activations.empty()) {
    if (options.activations != "nvfp4" && options.activations != "none")
      throw_bad_input("cli.bad_activations",
                      fmt::format("no activations '{}' (nvfp4, none)", options.activations));
    recipe.quantize_activations = options.activations == "nvfp4";
  }
  if (!options.scale_method.empty()) {
    recipe.scale_method = options.scale_method;
    for (auto& rule : recipe.rules) rule.scale_method.clear();
  }
  return recipe;
}

QuantizerSettings settings_from(const QuantizeOptions& options, const DeviceSelection& devices) {
  QuantizerSettings settings;
  auto policy = parse_nan_policy(options.nan_policy);
  if (!policy)
    throw_bad_input("cli.bad_nan_policy",
                    fmt::format("no NaN policy '{}' (error, zero)", options.nan_policy));
  settings.nan_policy = *policy;
  settings.device = devices.device;
  settings.workers = devices.worker_count();
  return settings;
}

nlohmann::ordered_json pipeline_json(const pipeline::PipelinedQuantization& pipelined,
                                     const QuantizeOptions& options, std::uint64_t limit) {
  nlohmann::ordered_json out;
  out["token_rows"] = pipelined.token_rows();
  out["inputs"] = options.calib_inputs.empty() ? "sequential" : options.calib_inputs;
  out["experts"] = options.calib_experts.empty() ? "all" : options.calib_experts;
  out["memory_limit"] = limit;
  auto& layers = out["layers"] = nlohmann::ordered_json::array();
  for (const auto& layer : pipelined.memory())
    layers.push_back({{"layer", layer.layer},
                      {"statistics_matrices", layer.statistics_matrices},
                      {"statistics_bytes", layer.statistics_bytes},
                      {"activation_bytes", layer.activation_bytes},
                      {"quantized_weight_bytes", layer.quantized_weight_bytes}});
  return out;
}

void print_pipeline_memory(const pipeline::PipelinedQuantization& pipelined, std::uint64_t limit) {
  fmt::print("calibration: {} token rows, one layer at a time (limit {}):\n",
             pipelined.token_rows(), human_bytes(limit));
  for (const auto& layer : pipelined.memory())
    fmt::print("  layer {:>3}: {:>4} statistics matrices {:>10} + activations {:>10}{} = {:>10}\n",
               layer.layer, layer.statistics_matrices, human_bytes(layer.statistics_bytes),
               human_bytes(layer.activation_bytes),
               layer.quantized_weight_bytes
                   ? " + quantized weights " + human_bytes(layer.quantized_weight_bytes)
                   : std::string(),
               human_bytes(layer.total()));
}

// Before any work: the layer that needs the most must fit the budget.
void check_pipeline_memory(const pipeline::PipelinedQuantization& pipelined, std::uint64_t limit) {
  for (const auto& layer : pipelined.memory())
    if (layer.total() > limit)
      throw_bad_input(
          "pipeline.memory",
          fmt::format("layer {} needs {} for its calibration statistics ({} matrices, {}), "
                      "activations ({}) and quantized weights kept for the sequential re-run "
                      "({}), over --calib-memory {}; raise it, calibrate fewer rows, or use "
                      "--calib-experts all (one gate/up matrix per layer)",
                      layer.layer, human_bytes(layer.total()), layer.statistics_matrices,
                      human_bytes(layer.statistics_bytes), human_bytes(layer.activation_bytes),
                      human_bytes(layer.quantized_weight_bytes), human_bytes(limit)));
}

nlohmann::ordered_json stage_json(const pipeline::StageTimes& times) {
  return {{"layers_calibrated", times.layers_calibrated},
          {"forward_s", times.forward},
          {"statistics_s", times.statistics},
          {"factorization_s", times.factorization},
          {"sweep_s", times.sweep},
          {"propagation_s", times.propagation},
          {"write_s", times.write},
          {"peak_statistics_bytes", times.peak_statistics_bytes}};
}

void print_stages(const pipeline::StageTimes& times) {
  fmt::print(
      "pipeline: {} layers calibrated; stage seconds (cumulative, overlapping): forward "
      "{:.2f}, statistics {:.2f}, factorization {:.2f}, sweep {:.2f}, propagation {:.2f}, "
      "write {:.2f}; peak statistics {}\n",
      times.layers_calibrated, times.forward, times.statistics, times.factorization, times.sweep,
      times.propagation, times.write, human_bytes(times.peak_statistics_bytes));
}

nlohmann::ordered_json plan_json(const QuantizePlan& planned, const Recipe& recipe) {
  nlohmann::ordered_json out;
  out["recipe"] = recipe.source;
  out["format"] = output_format_name(recipe.format);
  auto& items = out["items"] = nlohmann::ordered_json::array();
  for (const auto& item : planned.plan.items) {
    nlohmann::ordered_json row;
    auto& sources = row["sources"] = nlohmann::ordered_json::array();
    for (const auto& source : item.sources)
      sources.push_back({{"name", source.info->name},
                         {"dtype", dtype_name(source.info->dtype)},
                         {"shape", source.info->shape}});
    row["scheme"] = item.scheme;
    row["transform"] = item.transform->describe();
    row["rule"] = item.decided_by;
    row["bytes_in"] = item.source_bytes();
    row["bytes_out"] = item.output_bytes();
    row["bits_per_weight"] = bits_per_weight(item.output_bytes(), item.source_elements());
    items.push_back(std::move(row));
  }
  out["total"] = {{"bytes_in", planned.plan.source_bytes()},
                  {"bytes_out", planned.plan.output_bytes()},
                  {"nvfp4_modules", planned.model.nvfp4_modules.size()},
                  {"unquantized_linears", planned.model.unquantized_linears.size()}};
  return out;
}

void print_plan(const QuantizePlan& planned, const Recipe& recipe) {
  fmt::print("plan: {} → {} ({})\n", recipe.source, output_format_name(recipe.format),
             recipe.description);
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> by_scheme;
  std::map<std::string, std::uint64_t> elements_by_scheme;
  for (const auto& item : planned.plan.items) {
    for (std::size_t s = 0; s < item.sources.size(); ++s) {
      const auto* info = item.sources[s].info;
      fmt::print("  {:<60} {:>5} {:<14} → {:<12} {:>10} → {:>10}  {:>5.2f} bpw  [{}]\n", info->name,
                 dtype_name(info->dtype), shape_to_string(info->shape), item.scheme,
                 s == 0 ? human_bytes(item.source_bytes()) : "",
                 s == 0 ? human_bytes(item.output_bytes()) : "",
                 bits_per_weight(item.output_bytes(), item.source_elements()), item.decided_by);
    }
    auto& totals = by_scheme[item.scheme];
    totals.first += item.source_bytes();
    totals.second += item.output_bytes();
    elements_by_scheme[item.scheme] += item.source_elements();
  }
  fmt::print("by scheme:\n");
  for (const auto& [scheme, totals] : by_scheme)
    fmt::print("  {:<14} {:>10} → {:>10}  {:>5.2f} bpw\n", scheme, human_bytes(totals.first),
               human_bytes(totals.second),
               bits_per_weight(totals.second, elements_by_scheme[scheme]));
  fmt::print("total: {} tensors in, {} → {} ({:.2f}x smaller), {} NVFP4 Linears, {} kept\n",
             planned.decisions.size(), human_bytes(planned.plan.source_bytes()),
             human_bytes(planned.plan.output_bytes()),
             static_cast<double>(planned.plan.source_bytes()) /
                 std::max<std::uint64_t>(planned.plan.output_bytes(), 1),
             planned.model.nvfp4_modules.size(), planned.model.unquantized_linears.size());
}

nlohmann::ordered_json quality_json(const ExecutionReport& report) {
  auto rows = nlohmann::ordered_json::array();
  for (const auto& quality : report.quality) {
    nlohmann::ordered_json row = {{"tensor", quality.tensor},
                                  {"snr_db", quality.snr_db()},
                                  {"relative_mse", quality.relative_mse()}};
    if (quality.relative_loss) {
      row["gptq_relative_loss"] = *quality.relative_loss;
      // null: the rule said report_rtn: false.
      row["rtn_relative_loss"] = quality.rtn_relative_loss
                                     ? nlohmann::ordered_json(*quality.rtn_relative_loss)
                                     : nlohmann::ordered_json(nullptr);
      row["fallback"] = quality.fallback.empty() ? nlohmann::ordered_json(nullptr)
                                                 : nlohmann::ordered_json(quality.fallback);
      row["blended"] = quality.blended;
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

// GPTQ's summary: the mean layer objective against round-to-nearest's, and every module that
// fell back to round-to-nearest, by name (docs/algorithms/gptq.md, "Damping and fallbacks": count
// and log them).
void print_gptq_summary(const ExecutionReport& report) {
  double loss = 0.0, rtn = 0.0, loss_with_baseline = 0.0;
  std::size_t count = 0, with_baseline = 0;
  std::vector<const TensorQuality*> fallbacks;
  std::size_t blended = 0;
  for (const auto& quality : report.quality) {
    if (!quality.relative_loss) continue;
    loss += *quality.relative_loss;
    ++count;
    if (quality.rtn_relative_loss) {  // absent under report_rtn: false
      rtn += *quality.rtn_relative_loss;
      loss_with_baseline += *quality.relative_loss;
      ++with_baseline;
    }
    if (!quality.fallback.empty()) fallbacks.push_back(&quality);
    if (quality.blended) ++blended;
  }
  if (count == 0) return;
  std::string baseline = "round-to-nearest not computed";
  if (with_baseline == count)
    baseline = fmt::format("round-to-nearest {:.3e}, ratio {:.3f}", rtn / count,
                           rtn > 0 ? loss / rtn : 0.0);
  else if (with_baseline > 0)
    baseline = fmt::format("round-to-nearest {:.3e}, ratio {:.3f}, over the {} weights that "
                           "computed it",
                           rtn / with_baseline, rtn > 0 ? loss_with_baseline / rtn : 0.0,
                           with_baseline);
  fmt::print(
      "GPTQ: {} weights, mean relative layer loss {:.3e} ({}), {} fell back to round-to-nearest, "
      "{} few-token experts' weights blended with their layer's pooled statistics\n",
      count, loss / count, baseline, fallbacks.size(), blended);
  for (const auto* quality : fallbacks)
    fmt::print(stderr, "quantsmith: warning: {}: round-to-nearest instead of GPTQ: {}\n",
               quality->tensor, quality->fallback);
}

// Tensors holding NaN or Inf (under --nan-policy zero; `error` stops at the first).
void print_non_finite(const ExecutionReport& report) {
  if (report.non_finite.empty()) return;
  fmt::print(stderr,
             "quantsmith: warning: {} tensor(s) hold NaN or Inf (quantized weights "
             "took 0 for them, other tensors were written as they are):\n",
             report.non_finite.size());
  for (const auto& count : report.non_finite)
    fmt::print(stderr, "  {}: {} NaN, {} Inf\n", count.tensor, count.nan, count.inf);
}

nlohmann::ordered_json non_finite_json(const ExecutionReport& report) {
  auto rows = nlohmann::ordered_json::array();
  for (const auto& count : report.non_finite)
    rows.push_back({{"tensor", count.tensor}, {"nan", count.nan}, {"inf", count.inf}});
  return rows;
}

double mean_snr_db(const ExecutionReport& report) {
  double sum = 0.0;
  std::size_t count = 0;
  for (const auto& quality : report.quality) {
    if (!std::isfinite(quality.snr_db())) continue;
    sum += quality.snr_db();
    ++count;
  }
  return count ? sum / static_cast<double>(count) : 0.0;
}

// The layer-pipelined job under the CLI's executor (progress line, Ctrl-C).
ExecutionReport run_pipelined(pipeline::PipelinedQuantization& pipelined, const Plan& plan,
                              const ExecutionOptions& execution) {
  return pipelined.run(plan, execution, [&](const Plan& job, ExecutionOptions options) {
    return execute_with_progress(job, std::move(options), "quantize");
  });
}

int run_quantize(const QuantizeOptions& options) {
  const auto partition = partition_from_flag(options.partition);
  auto source = Checkpoint::open(options.input);
  require_layout_matches_config(source);
  check_output_directory(options.output, {source.directory()});
  const Recipe recipe = recipe_from(options);
  // Devices are checked before the plan: a device the machine lacks fails before any work.
  const auto cuda = cuda_availability();
  const DeviceSelection devices = parse_device_selection(options.device, cuda);
  QuantizerSettings settings = settings_from(options, devices);
  settings.min_snr_db = recipe.min_snr_db.value_or(kDefaultMinSnrDb);
  const auto pipeline_options = pipeline_options_from(options, devices, partition.has_value());
  std::optional<CalibrationStore> calibration;
  if (!options.calibration.empty()) calibration = CalibrationStore::open(options.calibration);
  const std::string fingerprint = quantize_fingerprint(
      {options.recipe.empty() ? scheme_recipe_text(options.scheme) : read_text_file(options.recipe),
       options.parameters, options.nan_policy, options.calibration},
      recipe, devices, cuda);
  // VQ fixes its codebooks and tiers before the plan (and saves them in OUT, claiming it).
  const auto vq_job = prepare_vq_job(
      source, recipe, calibration ? &*calibration : nullptr,
      {options.output, output_mode_from_flags(options.resume, options.force), options.dry_run,
       partition.has_value(), pipeline_options.has_value(), devices.device,
       settings.nan_policy == NanPolicy::Zero, fingerprint});
  QuantizeStageTimes vq_times;
  if (vq_job) settings.stage_times = &vq_times;
  std::unique_ptr<pipeline::PipelinedQuantization> pipelined;
  std::string token_digest;
  if (pipeline_options) {
    auto tokens = run::read_tokens_argument(options.calib_tokens, "calib", options.calib_rows);
    token_digest = xxh3_128_hex(std::as_bytes(std::span(tokens.ids)));
    pipelined = std::make_unique<pipeline::PipelinedQuantization>(source, std::move(tokens),
                                                                  *pipeline_options);
    settings.stage_times = &pipelined->quantizer_times();
  }
  const CalibrationStatistics* statistics =
      pipelined
          ? &pipelined->statistics()
          : (calibration ? static_cast<const CalibrationStatistics*>(&*calibration) : nullptr);
  auto planned = plan_quantization(
      source, recipe,
      [&](const QuantizeRequest& request) { return make_quantize_transform(request, settings); },
      statistics, vq_job ? &vq_job->assignment : nullptr);
  const std::uint64_t max_shard_bytes =
      options.max_shard_size.empty() ? recipe.max_shard_bytes.value_or(5'000'000'000)
                                     : parse_byte_size(options.max_shard_size);
  const std::uint64_t calib_memory = parse_byte_size(
      options.calib_memory.empty() ? std::string(kDefaultCalibMemory) : options.calib_memory);
  if (pipelined) pipelined->attach(planned);
  if (options.dry_run) {
    if (options.json) {
      auto out = plan_json(planned, recipe);
      if (partition) out["part"] = part_share_json(planned.plan, max_shard_bytes, *partition);
      if (pipelined) out["calibration"] = pipeline_json(*pipelined, options, calib_memory);
      if (vq_job) out["vq"] = vq_job_json(*vq_job);
      fmt::print("{}\n", out.dump(2));
    } else {
      print_plan(planned, recipe);
      if (vq_job) print_vq_job(*vq_job);
      if (partition) fmt::print("{}\n", part_share_line(planned.plan, max_shard_bytes, *partition));
      if (pipelined) print_pipeline_memory(*pipelined, calib_memory);
    }
    return kExitOk;
  }
  if (pipelined) check_pipeline_memory(*pipelined, calib_memory);

  std::optional<tbb::global_control> thread_limit;
  if (options.threads > 0)
    thread_limit.emplace(tbb::global_control::max_allowed_parallelism, options.threads);

  ExecutionOptions execution;
  execution.output_directory = options.output;
  execution.max_shard_bytes = max_shard_bytes;
  execution.max_buffer_bytes = parse_byte_size(options.max_buffer);
  execution.resume = options.resume;
  execution.force = options.force;
  execution.fingerprint = fingerprint;
  if (pipelined)
    execution.fingerprint +=
        fmt::format("|calib-tokens={}|inputs={}|experts={}", token_digest,
                    options.calib_inputs.empty() ? "sequential" : options.calib_inputs,
                    options.calib_experts.empty() ? "all" : options.calib_experts);
  execution.non_finite =
      settings.nan_policy == NanPolicy::Error ? NonFinitePolicy::Error : NonFinitePolicy::Report;
  execution.extra_files = output_config_files(source, planned.model, recipe.format);
  execution.transform_workers = devices.worker_count();
  if (devices.device == ComputeDevice::Cuda)
    execution.on_worker_start = [&devices](std::size_t worker) {
      use_cuda_device(devices.cuda_devices[worker]);
    };
  execution.partition = partition;
  if (vq_job && vq_job->claimed) execution.claimed_output = &*vq_job->claimed;
  const auto report = pipelined ? run_pipelined(*pipelined, planned.plan, execution)
                                : execute_with_progress(planned.plan, execution, "quantize");
  const double seconds = std::max(report.seconds, 1e-9);
  if (report.interrupted) return report_interruption(report);
  if (vq_job) finish_vq_job(*vq_job);
  if (partition && report.already_finalized) {
    if (options.json)
      fmt::print("{}\n", part_status_json(report, *partition).dump(2));
    else
      print_part_status(report, *partition, options.output);
    return kExitOk;
  }
  print_non_finite(report);
  if (options.json) {
    nlohmann::ordered_json out = plan_json(planned, recipe);
    out["output"] = options.output;
    out["run"] = {{"seconds", seconds},
                  {"bytes_read", report.bytes_read},
                  {"bytes_written", report.bytes_written},
                  {"gb_per_s", report.bytes_read / 1e9 / seconds},
                  {"shards_written", report.shards_written},
                  {"shards_resumed", report.shards_resumed},
                  {"mean_snr_db", mean_snr_db(report)}};
    if (partition) out["run"]["part"] = part_status_json(report, *partition);
    if (pipelined) out["pipeline"] = stage_json(pipelined->stage_times(report));
    if (vq_job) out["vq"] = vq_job_json(*vq_job, &vq_times);
    out["quality"] = quality_json(report);
    out["non_finite"] = non_finite_json(report);
    fmt::print("{}\n", out.dump(2));
  } else {
    fmt::print(
        "quantized {} → {}: {} Linears ({}), {} → {} in {:.2f} s ({:.2f} GB/s read)",
        source.directory().string(), options.output, quantized_linear_count(planned.model),
        planned.model.fp8_block_modules.empty() ? output_format_name(recipe.format) : "fp8-block",
        human_bytes(report.bytes_read), human_bytes(report.bytes_written), seconds,
        report.bytes_read / 1e9 / seconds);
    if (report.shards_resumed) fmt::print(", {} shard(s) resumed", report.shards_resumed);
    if (!report.quality.empty()) fmt::print(", mean weight SNR {:.2f} dB", mean_snr_db(report));
    fmt::print("\n");
    print_gptq_summary(report);
    if (vq_job) print_vq_job(*vq_job, &vq_times);
    if (partition) print_part_status(report, *partition, options.output);
    if (pipelined) print_stages(pipelined->stage_times(report));
  }
  return kExitOk;
}

}  // namespace

SubcommandRunner register_quantize(CLI::App& app) {
  auto options = std::make_shared<QuantizeOptions>();
  auto* command = app.add_subcommand(
      "quantize",
      "Quantize a BF16 (or FP8 block-scaled) checkpoint, streaming: plan from a recipe (or "
      "--scheme), then read, "
      "transform and write size-capped shards. A killed run continues with --resume.");
  command->add_option("input", options->input, "source checkpoint directory")->required();
  command->add_option("output", options->output, "output directory (new or empty)")->required();
  command->add_option("--recipe", options->recipe, "YAML recipe (see recipes/)");
  command->add_option("--scheme", options->scheme,
                      "quantize every Linear except lm_head, routers, indexer and MTP: nvfp4, "
                      "nvfp4-gptq (GPTQ on the NVFP4 grid), int8 (W8A16 g128), int8-channel, "
                      "int4 (W4A16 asym g128), int4-g32, gptq-int4, gptq-int8 (GPTQ needs "
                      "--calib or --calib-tokens), fp8-block (DeepSeek-V3 layout); bf16: decode an "
                      "FP8 block-scaled checkpoint to BF16");
  command->add_option("--format", options->format,
                      "output layout: modelopt or compressed-tensors (overrides the recipe)");
  command->add_option("--scale-method", options->scale_method,
                      "NVFP4 scale selection for every rule: max, mse, fp8-sweep, joint, hessian "
                      "(hessian needs --calib)");
  command->add_option("--param", options->parameters,
                      "NAME=VALUE: override a parameter the recipe declares");
  command->add_flag("--dry-run", options->dry_run,
                    "print the plan (per tensor and in total) and stop before any data is read "
                    "(vq rules: the tier histogram per layer and the bits per weight, from a "
                    "preparation that reads sampled rows of the experts)");
  command->add_flag("--json", options->json, "machine-readable plan / report on stdout");
  command->add_flag("--resume", options->resume, "continue a killed or interrupted run");
  command->add_flag("--force", options->force,
                    "start over: remove an earlier job's output first (only the files its job "
                    "file records; anything else in the directory refuses the run)");
  command->add_option("--device", options->device,
                      "where transforms run: auto (default), cpu, cpu:N (N workers), cuda, "
                      "cuda:I, cuda:I,J,... or cuda:all (one worker per GPU); the output is "
                      "the same for any worker count");
  command->add_option("--threads", options->threads, "CPU threads (default: all cores)");
  command->add_option("--max-shard-size", options->max_shard_size,
                      "output shard size cap, e.g. 5GB (default: the recipe's, else 5GB)");
  command->add_option("--max-buffer", options->max_buffer,
                      "memory for tensors in flight, e.g. 1GiB (default 256MiB)");
  command->add_option("--calib", options->calibration,
                      "statistics from quantsmith calibrate: Hessians for GPTQ and VQ (which "
                      "needs this file: codebooks and tiers are fixed at plan time), activation "
                      "ranges for W4A4");
  command->add_option("--activations", options->activations,
                      "nvfp4 (W4A4, static input scales from --calib) or none (W4A16; the "
                      "default unless the recipe says otherwise)");
  command->add_option("--calib-tokens", options->calib_tokens,
                      "calibrate in this job, layer by layer, on these tokens (safetensors I32 "
                      "[rows, seq], FILE or FILE:TENSOR; default tensor calib): one decoder "
                      "layer's statistics in memory at a time, no statistics file");
  command->add_option("--calib-rows", options->calib_rows,
                      "with --calib-tokens: use only the first N rows (default: all)");
  command->add_option("--calib-inputs", options->calib_inputs,
                      "with --calib-tokens: sequential (default; layer L+1 calibrated on the "
                      "outputs of the already-quantized layers) or original (the BF16 model's "
                      "activations: the bytes calibrate + quantize --calib write)");
  command->add_option("--calib-experts", options->calib_experts,
                      "with --calib-tokens: all (default; every token through every routed "
                      "expert for the statistics, one gate/up matrix per layer) or routed");
  command->add_option("--calib-memory", options->calib_memory,
                      "with --calib-tokens: budget for one layer's statistics and activations, "
                      "checked before any work (default 64GiB; --dry-run prints each layer's)");
  command->add_option("--nan-policy", options->nan_policy,
                      "NaN/Inf in a weight being quantized: error (default) or zero");
  add_partition_option(*command, options->partition);
  return [options]() { return run_quantize(*options); };
}

}  // namespace qs::cli
