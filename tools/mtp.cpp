// quantsmith mtp extract|inject: the MTP draft layer as a standalone draft checkpoint
// (optionally requantized, seed 003), or put back into a quantized checkpoint (seed 002).

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "plan_execution.h"
#include "qs/ckpt/core/byte_size.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/plan/draft_target_resolution.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/job/mtp_extract_job.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/plan/mtp_extract_plan.h"
#include "qs/ckpt/job/output_directory.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/model/tensor_name.h"
#include "qs/ckpt/validate/validation.h"
#include "qs/quant/dequantize_transform.h"
#include "qs/quant/quantize_transforms.h"
#include "scheme_presets.h"
#include "splice_job.h"

namespace qs::cli {
namespace {

struct ExtractOptions {
  std::string input;
  std::string output;
  std::string requant;
  std::string recipe;
  std::vector<std::string> parameters;
  std::string target;  // requantize to what vLLM builds for the draft beside this target
  bool with_head = false;
  bool dry_run = false;
  bool json = false;
  bool resume = false;
  bool force = false;
  std::string max_shard_size = "5GB";
  std::string partition;
};

// The Linear weights the draft will hold (2-D weights of Linear roles), by output name.
std::vector<std::string> draft_linear_weights(const Plan& plan) {
  std::vector<std::string> names;
  for (const auto& spec : plan.output_specs()) {
    const auto parsed = parse_tensor_name(spec.name);
    if (spec.shape.size() == 2 && parsed.parameter == TensorParameter::Weight &&
        is_linear(parsed.role))
      names.push_back(spec.name);
  }
  return names;
}

// --target: each Linear in the scheme vLLM builds it with when the draft is served beside
// TARGET; nullopt when that is BF16 throughout. Refuses (before any byte is written) a scheme
// we cannot produce.
std::optional<Recipe> target_recipe(const ExtractOptions& options, const Plan& plan) {
  const auto target = read_target_quantization(options.target);
  const auto schemes = resolve_draft_modules(target, draft_linear_weights(plan));
  return draft_recipe_for_target(target, schemes, "--target " + options.target);
}

std::optional<Recipe> requant_recipe(const ExtractOptions& options, const Plan& plan) {
  const int choices = !options.requant.empty() + !options.recipe.empty() + !options.target.empty();
  if (choices > 1)
    throw_bad_input("cli.recipe_or_scheme",
                    "give at most one of --requant SCHEME, --recipe R or --target TARGET");
  if (!options.target.empty()) {
    if (!options.parameters.empty())
      throw_bad_input("cli.bad_param", "--param needs a --recipe that declares parameters");
    return target_recipe(options, plan);
  }
  if (!options.recipe.empty())
    return load_recipe(options.recipe, parse_parameters(options.parameters));
  if (!options.parameters.empty())
    throw_bad_input("cli.bad_param", "--param needs a --recipe that declares parameters");
  if (options.requant.empty()) return std::nullopt;
  if (options.requant.starts_with("gptq"))
    throw_bad_input("cli.unknown_scheme",
                    "GPTQ needs calibration statistics of the draft; requantize with a "
                    "round-to-nearest scheme (int4-g32, int4, int8, nvfp4, ...)");
  return parse_recipe(draft_scheme_recipe_text(options.requant), "--requant " + options.requant);
}

// The target's quantization config files, for the job fingerprint.
std::string target_config_text(const std::filesystem::path& target) {
  const auto directory = std::filesystem::is_directory(target) ? target : target.parent_path();
  std::string text;
  for (const auto& file : {std::filesystem::is_directory(target) ? target / "config.json" : target,
                           directory / std::string(kHfQuantConfigFileName)})
    if (std::filesystem::is_regular_file(file)) text += read_text_file(file);
  return text;
}

// What chose the requantization recipe, for the job's fingerprint (mtp_extract_job.h).
std::string requant_identity(const ExtractOptions& options) {
  std::string identity =
      fmt::format("|requant={}|recipe={}|target={}", options.requant,
                  options.recipe.empty() ? "" : read_text_file(options.recipe),
                  options.target.empty() ? "" : target_config_text(options.target));
  for (const auto& parameter : options.parameters) identity += "|" + parameter;
  return identity;
}

// The requantization's transforms, exactly as `quantize` makes them for `recipe`.
QuantizeTransformFactory quantizer_for(const Recipe& recipe) {
  auto settings = std::make_shared<QuantizerSettings>();
  settings->min_snr_db = recipe.min_snr_db.value_or(kDefaultMinSnrDb);
  return [settings](const QuantizeRequest& request) {
    return make_quantize_transform(request, *settings);
  };
}

int run_extract(const ExtractOptions& options) {
  const auto partition = partition_from_flag(options.partition);
  auto source = Checkpoint::open(options.input);
  require_layout_matches_config(source);
  check_output_directory(options.output, {source.directory()});
  const auto planned = plan_mtp_extract(
      source, {options.with_head},
      [](const DequantizeRequest& request) { return make_dequantize_transform(request); });
  const auto recipe = requant_recipe(options, planned.plan);
  if (options.dry_run) {
    nlohmann::ordered_json out = {{"mtp_layers", planned.layer_count},
                                  {"first_layer", planned.first_layer},
                                  {"tensors", planned.plan.output_specs().size()},
                                  {"dequantized_modules", planned.dequantized_modules},
                                  {"output_bytes", planned.plan.output_bytes()},
                                  {"requant", recipe ? recipe->source : "none"}};
    if (options.json) {
      fmt::print("{}\n", out.dump(2));
    } else {
      fmt::print(
          "mtp extract {}: layer {} ({} tensors, {} dequantized to BF16, {}), requantize: "
          "{}\n",
          source.directory().string(), planned.first_layer, planned.plan.output_specs().size(),
          planned.dequantized_modules.size(), human_bytes(planned.plan.output_bytes()),
          recipe ? recipe->source : "no");
      for (const auto& module : planned.dequantized_modules)
        fmt::print("  dequantize {}\n", module);
    }
    return kExitOk;
  }

  MtpExtractJobOptions job;
  job.output = options.output;
  job.mode = output_mode_from_flags(options.resume, options.force);
  job.max_shard_bytes = parse_byte_size(options.max_shard_size);
  job.with_head = options.with_head;
  job.requant = recipe;
  job.requant_identity = requant_identity(options);
  job.partition = partition;
  const auto result =
      run_mtp_extract_job(source, planned, job, quantizer_for, execute_with_progress);
  if (result.report.interrupted) return report_interruption(result.report);
  if (partition) {
    if (options.json)
      fmt::print("{}\n", part_status_json(result.report, *partition).dump(2));
    else
      print_part_status(result.report, *partition, options.output);
    return kExitOk;
  }
  if (result.already_complete) {
    if (options.json)
      fmt::print(
          "{}\n",
          nlohmann::ordered_json{{"output", options.output}, {"already_complete", true}}.dump(2));
    else
      fmt::print("mtp extract {} → {}: already complete\n", source.directory().string(),
                 options.output);
    return kExitOk;
  }
  const std::size_t quantized = result.requantized_linears;
  const double seconds = result.seconds;
  const std::uint64_t written = result.bytes_written;

  if (options.json) {
    fmt::print("{}\n",
               nlohmann::ordered_json{{"output", options.output},
                                      {"first_layer", planned.first_layer},
                                      {"tensors", planned.plan.output_specs().size()},
                                      {"dequantized_modules", planned.dequantized_modules.size()},
                                      {"requantized_linears", quantized},
                                      {"bytes_written", written},
                                      {"seconds", seconds}}
                   .dump(2));
    return kExitOk;
  }
  fmt::print("mtp extract {} → {}: layer {}, {} tensors ({} dequantized{}), {} in {:.2f} s\n",
             source.directory().string(), options.output, planned.first_layer,
             planned.plan.output_specs().size(), planned.dequantized_modules.size(),
             recipe ? fmt::format(", {} Linears requantized by {}", quantized, recipe->source) : "",
             human_bytes(written), seconds);
  return kExitOk;
}

void register_extract(CLI::App& mtp, const std::shared_ptr<ExtractOptions>& options,
                      std::function<int()>& runner) {
  auto* command = mtp.add_subcommand(
      "extract",
      "the MTP layer as a standalone draft checkpoint for vLLM's DeepSeekMTP loader: tensor "
      "names unchanged, quantized Linears dequantized to BF16 (bit-exact with our reference "
      "decoding), config.json of the source; optionally requantized");
  command->add_option("IN", options->input, "checkpoint with an MTP layer (any format we read)")
      ->required();
  command->add_option("OUT", options->output, "output directory (new or empty)")->required();
  command->add_option("--requant", options->requant,
                      "requantize the draft's Linears (router, indexer, eh_proj, shared head "
                      "stay BF16): int4-g32 (seed 003), int4, int8, int8-channel, nvfp4");
  command->add_option("--recipe", options->recipe,
                      "requantize the BF16 draft with this quantize recipe instead");
  command->add_option("--param", options->parameters, "NAME=VALUE for the recipe, repeatable");
  command->add_option("--target", options->target,
                      "requantize each draft Linear to the scheme vLLM builds it with when the "
                      "draft is served beside TARGET (a checkpoint directory or its "
                      "config.json; vLLM reads only the target's quantization config for the "
                      "draft): its compressed-tensors groups / ignore list or modelopt "
                      "exclusions, BF16 where it ignores the module");
  command->add_flag("--with-head", options->with_head,
                    "also write lm_head and the embedding as the draft's own "
                    "(shared_head.head, embed_tokens)");
  command->add_flag("--dry-run", options->dry_run, "print the plan and write nothing");
  command->add_flag("--json", options->json, "machine-readable summary on stdout");
  command->add_flag("--resume", options->resume, "continue a killed or interrupted run");
  command->add_flag("--force", options->force,
                    "start over: remove an earlier job's output first (only the files its job "
                    "file records; anything else in the directory refuses the run)");
  command->add_option("--max-shard-size", options->max_shard_size, "largest output shard")
      ->capture_default_str();
  add_partition_option(*command, options->partition);
  command->callback(
      [options, &runner]() { runner = [options]() { return run_extract(*options); }; });
}

struct InjectOptions {
  std::string quantized;
  std::string source;
  std::string output;
  SpliceJobOptions job;
};

int run_inject(const InjectOptions& options) {
  // The source must have an MTP layer: otherwise the rule would only warn and the output
  // would silently lack it.
  auto source = Checkpoint::open(options.source);
  const auto layout = model_layout_from_config(source.config());
  const bool has_mtp =
      layout && std::any_of(source.tensors().begin(), source.tensors().end(), [&](const auto& t) {
        return in_mtp_layer(parse_tensor_name(t.info->name), *layout);
      });
  if (!has_mtp)
    throw Error(ErrorClass::BadInput, "mtp.no_mtp_layer",
                "the source holds no MTP layer tensors to inject", source.directory().string());
  TakeRule rule;
  rule.text = options.source + ":mtp";
  rule.source = options.source;
  rule.match.name = rule.text;
  rule.match.mtp = true;
  return run_splice(options.output, options.quantized, {rule}, options.job, "mtp inject");
}

void register_inject(CLI::App& mtp, const std::shared_ptr<InjectOptions>& options,
                     std::function<int()>& runner) {
  auto* command = mtp.add_subcommand(
      "inject",
      "put the MTP layer of SOURCE (e.g. the BF16 original, or a draft from `mtp extract`) into "
      "QUANTIZED, replacing its own: a splice whose config lists the layer as ignored when it "
      "is BF16 (seed 002), or as its own group when it is quantized");
  command->add_option("QUANTIZED", options->quantized, "the checkpoint to complete")->required();
  command->add_option("SOURCE", options->source, "checkpoint or draft with the MTP layer")
      ->required();
  command->add_option("OUT", options->output, "output directory (new or empty)")->required();
  add_splice_job_options(*command, options->job);
  command->callback(
      [options, &runner]() { runner = [options]() { return run_inject(*options); }; });
}

}  // namespace

SubcommandRunner register_mtp(CLI::App& app) {
  auto* mtp = app.add_subcommand("mtp",
                                 "the MTP draft layer: extract as a standalone draft "
                                 "(optionally requantized), or inject into a checkpoint");
  mtp->require_subcommand(1);
  // The nested subcommand that parsed sets what runs.
  auto runner = std::make_shared<std::function<int()>>();
  register_extract(*mtp, std::make_shared<ExtractOptions>(), *runner);
  register_inject(*mtp, std::make_shared<InjectOptions>(), *runner);
  return [runner]() { return (*runner)(); };
}

}  // namespace qs::cli
