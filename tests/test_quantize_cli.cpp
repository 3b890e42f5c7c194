// `quantsmith quantize` end to end, as users run it: dry-run, both layouts, recipes,
// refusals with exit code 2, and SIGKILL at any point followed by --resume giving the same
// bytes as an uninterrupted run.

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "test_support.h"


namespace qs {
namespace {

using testing::directory_contents;
using testing::quoted;
using testing::run_cli;
using testing::run_cli_after;
using testing::spawn_cli;
using testing::ScratchDirectory;
using testing::shipped_recipe;

const std::filesystem::path kModel = testing::bundled_model();

std::string seed001() {
  return "--recipe " + quoted(shipped_recipe("glm5-nvfp4-seed001.yaml")) +
         " --param boundary_layers=1";
}

TEST(QuantizeCli, DryRunPrintsThePlanAndWritesNothing) {
  ScratchDirectory scratch("quantize-dry");
  auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "out") + " " +
                        seed001() + " --dry-run");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("model.layers.1.mlp.experts.0.gate_proj.weight"), std::string::npos);
  EXPECT_NE(result.output.find("4.50 bpw"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("total:"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(scratch.path() / "out"));

  auto json = run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "out") + " " +
                      seed001() + " --dry-run --json");
  ASSERT_EQ(json.exit_code, 0) << json.output;
  auto parsed = nlohmann::json::parse(json.standard_output);
  EXPECT_EQ(parsed["total"]["nvfp4_modules"], 96);
}

TEST(QuantizeCli, BothLayoutsWriteLoadableCheckpoints) {
  ScratchDirectory scratch("quantize-layouts");
  for (const char* format : {"modelopt", "compressed-tensors"}) {
    const auto out = scratch.path() / format;
    auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(out) + " " + seed001() +
                          " --format " + format + " --max-shard-size 4MB --json");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    auto report = nlohmann::json::parse(result.standard_output);
    EXPECT_GT(report["run"]["mean_snr_db"].get<double>(), 15.0);
    auto checkpoint = Checkpoint::open(out);
    const bool modelopt = std::string(format) == "modelopt";
    const std::string module = "model.layers.2.mlp.experts.3.up_proj";
    const auto packed = checkpoint.at(module + (modelopt ? ".weight" : ".weight_packed"));
    EXPECT_EQ(packed.info->dtype, DType::U8);
    EXPECT_EQ(packed.info->shape, (Shape{128, 128}));
    EXPECT_EQ(checkpoint.at(module + ".weight_scale").info->dtype, DType::F8_E4M3);
    EXPECT_TRUE(checkpoint.find(module + (modelopt ? ".weight_scale_2" : ".weight_global_scale")));
    EXPECT_EQ(checkpoint.at("model.layers.0.self_attn.indexer.weights_proj.weight").info->dtype,
              DType::F32);
    const auto config = nlohmann::json::parse(read_text_file(out / "config.json"));
    EXPECT_EQ(config["quantization_config"]["quant_method"],
              modelopt ? "modelopt" : "compressed-tensors");
    EXPECT_EQ(std::filesystem::exists(out / "hf_quant_config.json"), modelopt);
    EXPECT_TRUE(std::filesystem::exists(out / "generation_config.json"));
    auto validate = run_cli("validate " + quoted(out));
    EXPECT_EQ(validate.exit_code, 0) << validate.output;
  }
}

TEST(QuantizeCli, RefusesBadInputWithExitCodeTwo) {
  ScratchDirectory scratch("quantize-refusals");
  const auto out = quoted(scratch.path() / "out");
  const std::map<std::string, std::string> cases = {
      {"--scheme int3", "cli.unknown_scheme"},
      {"--scheme nvfp4 --scale-method median", "plan.unknown_scale_method"},
      {"--scheme nvfp4 --format gguf", "cli.unknown_format"},
      {seed001() + " --param nonexistent=1", "recipe.unknown_parameter"},
      {"", "cli.recipe_or_scheme"},
  };
  for (const auto& [arguments, kind] : cases) {
    auto result = run_cli("quantize " + quoted(kModel) + " " + out + " " + arguments);
    EXPECT_EQ(result.exit_code, 2) << arguments << "\n" << result.output;
    EXPECT_NE(result.output.find("error:"), std::string::npos) << result.output;
  }
  // Output inside the input: refused before anything is written.
  auto inside =
      run_cli("quantize " + quoted(kModel) + " " + quoted(kModel / "out") + " --scheme nvfp4");
  EXPECT_EQ(inside.exit_code, 2);
  EXPECT_FALSE(std::filesystem::exists(kModel / "out"));
}

TEST(QuantizeCli, RefusesNonFiniteWeightsUnlessAskedToZeroThem) {
  ScratchDirectory scratch("quantize-nan");
  const auto model = scratch.path() / "model";
  std::filesystem::create_directories(model);
  testing::copy_bundled_model(model);
  // Poison one element of a routed expert: BF16 0x7FC0 is NaN.
  auto checkpoint = Checkpoint::open(model);
  const auto target = checkpoint.at("model.layers.1.mlp.experts.2.down_proj.weight");
  const auto shard_path = target.shard->path();
  const auto offset = target.shard->header().data_start() + target.info->begin + 10;
  {
    std::fstream file(shard_path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(offset));
    const char nan_bf16[2] = {static_cast<char>(0xC0), 0x7F};
    file.write(nan_bf16, 2);
  }
  auto refused =
      run_cli("quantize " + quoted(model) + " " + quoted(scratch.path() / "out") + " " + seed001());
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("model.layers.1.mlp.experts.2.down_proj.weight"), std::string::npos)
      << refused.output;
  auto zeroed = run_cli("quantize " + quoted(model) + " " + quoted(scratch.path() / "zeroed") +
                        " " + seed001() + " --nan-policy zero");
  EXPECT_EQ(zeroed.exit_code, 0) << zeroed.output;
}

TEST(QuantizeCli, RefusesANonEmptyOutputAndForceReplacesOnlyOurFiles) {
  ScratchDirectory scratch("quantize-force");
  const auto out = scratch.path() / "out";
  std::filesystem::create_directories(out);
  write_file_atomically(out / "notes.txt", "mine");
  const std::string command = "quantize " + quoted(kModel) + " " + quoted(out) + " " + seed001();
  auto refused = run_cli(command);
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("not empty"), std::string::npos) << refused.output;
  std::filesystem::remove(out / "notes.txt");
  ASSERT_EQ(run_cli(command).exit_code, 0);
  auto again = run_cli(command);
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.output.find("--resume"), std::string::npos) << again.output;
  write_file_atomically(out / "notes.txt", "mine");
  auto forced = run_cli(command + " --force");
  EXPECT_EQ(forced.exit_code, 2) << "a foreign file still blocks --force: " << forced.output;
  std::filesystem::remove(out / "notes.txt");
  EXPECT_EQ(run_cli(command + " --force").exit_code, 0);
}

TEST(QuantizeCli, FullDiskFailsCleanlyAndResumes) {
  ScratchDirectory scratch("quantize-full");
  const auto out = scratch.path() / "out";
  const std::string command =
      "quantize " + quoted(kModel) + " " + quoted(out) + " " + seed001() + " --max-shard-size 2MB";
  // A file-size limit below the shard size stands in for a full disk: the write past it fails
  // with EFBIG, the way it fails with ENOSPC on a full disk (the signal is ignored so the
  // write returns). 1500 blocks is 750 KB or 1.5 MB depending on the shell's block unit;
  // either is below the 2 MB shards.
  auto failed = run_cli_after("trap '' XFSZ; ulimit -f 1500;", command);
  ASSERT_EQ(failed.exit_code, 1) << failed.output;
  EXPECT_NE(failed.output.find("error:"), std::string::npos);
  EXPECT_NE(failed.output.find(".safetensors"), std::string::npos) << failed.output;
  EXPECT_FALSE(std::filesystem::exists(out / "model.safetensors.index.json"));
  auto resumed = run_cli(command + " --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  auto reference = run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "ref") +
                           " " + seed001() + " --max-shard-size 2MB");
  ASSERT_EQ(reference.exit_code, 0);
  EXPECT_EQ(directory_contents(out), directory_contents(scratch.path() / "ref"));
}

TEST(QuantizeCli, W4A4TakesStaticInputScalesFromCalibration) {
  ScratchDirectory scratch("quantize-w4a4");
  const auto stats = scratch.path() / "stats.qs";
  auto calibrated =
      run_cli("calibrate " + quoted(kModel) + " --tokens " + quoted(kModel / "tokens.safetensors") +
              " --max-rows 2 --out " + quoted(stats));
  ASSERT_EQ(calibrated.exit_code, 0) << calibrated.output;
  auto refused = run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "x") + " " +
                         seed001() + " --activations nvfp4");
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("--calib"), std::string::npos) << refused.output;
  for (const char* format : {"modelopt", "compressed-tensors"}) {
    const auto out = scratch.path() / format;
    auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(out) + " " + seed001() +
                          " --activations nvfp4 --calib " + quoted(stats) + " --format " + format);
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const bool modelopt = std::string(format) == "modelopt";
    const std::string suffix = modelopt ? ".input_scale" : ".input_global_scale";
    auto checkpoint = Checkpoint::open(out);
    // One input scale for every routed expert's gate/up of a layer; down has its own.
    const auto read = [&](const std::string& name) {
      const auto location = checkpoint.at(name);
      float value = 0.0f;
      std::memcpy(&value, location.shard->read(*location.info).data(), 4);
      return value;
    };
    const float gate = read("model.layers.1.mlp.experts.0.gate_proj" + suffix);
    EXPECT_GT(gate, 0.0f);
    for (int e = 0; e < 16; ++e) {
      EXPECT_EQ(read(fmt::format("model.layers.1.mlp.experts.{}.gate_proj{}", e, suffix)), gate);
      EXPECT_EQ(read(fmt::format("model.layers.1.mlp.experts.{}.up_proj{}", e, suffix)), gate);
    }
    EXPECT_NE(read("model.layers.1.mlp.experts.0.down_proj" + suffix), gate);
    const auto config = nlohmann::json::parse(read_text_file(out / "config.json"));
    EXPECT_FALSE(
        config["quantization_config"]["config_groups"]["group_0"]["input_activations"].is_null());
    auto validate = run_cli("validate " + quoted(out) + " --ref " + quoted(kModel));
    EXPECT_EQ(validate.exit_code, 0) << validate.output;
  }
}

TEST(QuantizeCli, SigkillAtAnyPointThenResumeGivesIdenticalBytes) {
  ScratchDirectory scratch("quantize-kill");
  const std::vector<std::string> common = {
      "--recipe",         (shipped_recipe("glm5-nvfp4-seed001.yaml")).string(),
      "--param",          "boundary_layers=1",
      "--max-shard-size", "1MB",
      "--threads",        "1",
      "--scale-method",   "mse"};
  auto arguments_for = [&](const std::filesystem::path& out) {
    std::vector<std::string> arguments = {"quantize", kModel.string(), out.string()};
    arguments.insert(arguments.end(), common.begin(), common.end());
    return arguments;
  };
  const auto reference = scratch.path() / "reference";
  const auto start = std::chrono::steady_clock::now();
  pid_t pid = spawn_cli(arguments_for(reference));
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const auto duration = std::chrono::steady_clock::now() - start;
  const auto expected = directory_contents(reference);

  // SIGKILL at several points, and Ctrl-C (SIGINT), which finishes the current shard and
  // exits with 130 (or, before the handler is installed during planning, just ends it).
  for (int signal_number : {SIGKILL, SIGINT})
    for (double fraction : {0.1, 0.3, 0.5, 0.7, 0.9}) {
      const auto out = scratch.path() / fmt::format("signal-{}-at-{}", signal_number, fraction);
      pid = spawn_cli(arguments_for(out));
      std::this_thread::sleep_for(
          std::chrono::duration_cast<std::chrono::microseconds>(duration * fraction));
      kill(pid, signal_number);
      waitpid(pid, &status, 0);
      if (signal_number == SIGINT && WIFEXITED(status)) {
        EXPECT_TRUE(WEXITSTATUS(status) == 130 || WEXITSTATUS(status) == 0) << WEXITSTATUS(status);
      }
      std::string resume_arguments = "quantize " + quoted(kModel) + " " + quoted(out);
      for (const auto& argument : common)
        resume_arguments += fmt::format(" {}", quoted(std::filesystem::path(argument)));
      auto resumed = run_cli(resume_arguments + " --resume");
      ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
      EXPECT_EQ(directory_contents(out), expected)
          << "signal " << signal_number << " at " << fraction;
      for (const auto& entry : std::filesystem::directory_iterator(out))
        EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos);
    }
}

}  // namespace
}  // namespace qs
