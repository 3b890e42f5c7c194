// quantsmith dequantize IN OUT: a float checkpoint with every quantized Linear decoded (any
// format quantsmith reads), for evaluating fake-quantized weights where the format cannot be
// loaded, and for checking an independent decoder against ours (scripts/conformance).

#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "plan_execution.h"
#include "qs/ckpt/core/byte_size.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/job/output_directory.h"
#include "qs/ckpt/plan/dequantize_plan.h"
#include "qs/quant/dequantize_transform.h"

namespace qs::cli {
namespace {

struct DequantizeOptions {
  std::string input;
  std::string output;
  std::string dtype = "bf16";
  std::string max_shard_size = "5GB";
  bool resume = false;
  bool force = false;
  bool json = false;
};

DType dtype_from_flag(const std::string& text) {
  if (text == "bf16") return DType::BF16;
  if (text == "f16") return DType::F16;
  if (text == "f32") return DType::F32;
  throw_bad_input("cli.bad_dtype", fmt::format("--dtype {}: use bf16, f16 or f32", text));
}

int run_dequantize(const DequantizeOptions& options) {
  const DType dtype = dtype_from_flag(options.dtype);
  auto source = Checkpoint::open(options.input);
  check_output_directory(options.output, {source.directory()});
  const auto planned = plan_dequantize(source, dtype, [](const DequantizeRequest& request) {
    return make_dequantize_transform(request);
  });
  ExecutionOptions execution;
  execution.output_directory = options.output;
  execution.max_shard_bytes = parse_byte_size(options.max_shard_size);
  const auto mode = output_mode_from_flags(options.resume, options.force);
  execution.resume = mode == OutputMode::Resume;
  execution.force = mode == OutputMode::Force;
  execution.fingerprint =
      fmt::format("quantsmith {}|dequantize|dtype={}", kQuantsmithVersion, options.dtype);
  // config.json without quantization_config: every Linear is a float weight now.
  execution.extra_files = output_config_files(source, QuantizedModel{}, std::nullopt);
  const auto report = execute_with_progress(planned.plan, execution, "dequantize");
  if (report.interrupted) return report_interruption(report);
  if (options.json) {
    fmt::print("{}\n", nlohmann::ordered_json{{"output", options.output},
                                              {"dtype", options.dtype},
                                              {"dequantized_modules",
                                               planned.dequantized_modules.size()},
                                              {"copied_tensors", planned.copied_tensors},
                                              {"bytes_written", report.bytes_written},
                                              {"seconds", report.seconds}}
                           .dump(2));
    return kExitOk;
  }
  fmt::print("dequantize {} → {}: {} Linears decoded to {}, {} tensors copied, {} in {:.2f} s\n",
             source.directory().string(), options.output, planned.dequantized_modules.size(),
             dtype_name(dtype), planned.copied_tensors, human_bytes(report.bytes_written),
             report.seconds);
  return kExitOk;
}

}  // namespace

SubcommandRunner register_dequantize(CLI::App& app) {
  auto options = std::make_shared<DequantizeOptions>();
  auto* command = app.add_subcommand(
      "dequantize",
      "Write a float checkpoint with every quantized Linear decoded (NVFP4, pack-quantized, "
      "FP8 block-scaled, VQ: the runner's decoding, bit for bit), other tensors copied and "
      "config.json without quantization_config.");
  command->add_option("IN", options->input, "quantized checkpoint directory")->required();
  command->add_option("OUT", options->output, "output directory (new or empty)")->required();
  command->add_option("--dtype", options->dtype, "bf16 (default), f16 or f32")
      ->capture_default_str();
  command->add_option("--max-shard-size", options->max_shard_size, "largest output shard")
      ->capture_default_str();
  command->add_flag("--resume", options->resume, "continue a killed or interrupted run");
  command->add_flag("--force", options->force,
                    "start over: remove an earlier job's output first (only the files its job "
                    "file records)");
  command->add_flag("--json", options->json, "machine-readable summary on stdout");
  return [options]() { return run_dequantize(*options); };
}

}  // namespace qs::cli
