// The CLI as a user runs it: exit codes, one-line errors naming the file, --json output.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "test_support.h"

namespace qs {
namespace {

namespace fs = std::filesystem;
using testing::copy_bundled_model;
using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;

const std::string kFixture = QS_TEST_DATA_DIR "/glm5-tiny";

TEST(Cli, HelpAndUnknownSubcommand) {
  auto help = run_cli("--help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* command : {"inspect", "validate", "synth"})
    EXPECT_NE(help.output.find(command), std::string::npos) << command;
  EXPECT_EQ(run_cli("frobnicate").exit_code, 2);
  EXPECT_EQ(run_cli("").exit_code, 2);
}

TEST(CliInspect, SummarizesTheBundledModel) {
  auto result = run_cli("inspect --json " + kFixture);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto json = nlohmann::json::parse(result.standard_output);
  EXPECT_EQ(json["tensors"], 292);
  EXPECT_EQ(json["shards"], 2);
  EXPECT_EQ(json["tensor_bytes"], 19041280);
  EXPECT_EQ(json["quantization"]["detected"], "none");
  EXPECT_EQ(json["mtp_layers"], nlohmann::json::array({4}));
  EXPECT_EQ(json["layers"], nlohmann::json::array({0, 1, 2, 3}));
  EXPECT_EQ(json["experts_per_layer"]["1"], 16);
  EXPECT_EQ(json["experts_per_layer"]["4"], 16);
  EXPECT_EQ(json["config"]["model_type"], "glm_moe_dsa");
  std::uint64_t category_bytes = 0, category_tensors = 0;
  for (const auto& [name, tally] : json["by_category"].items()) {
    category_bytes += tally["bytes"].get<std::uint64_t>();
    category_tensors += tally["tensors"].get<std::uint64_t>();
  }
  EXPECT_EQ(category_bytes, 19041280u);
  EXPECT_EQ(category_tensors, 292u);
  EXPECT_EQ(json["by_category"]["routed_expert"]["tensors"], 4 * 16 * 3);
  EXPECT_EQ(json["by_dtype"]["F32"]["tensors"], 4) << "e_score_correction_bias of layers 1-4";

  auto text = run_cli("inspect " + kFixture);
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_NE(text.output.find("MTP layers: 4"), std::string::npos) << text.output;
}

TEST(CliValidate, BundledModelIsValidWithAndWithoutChecksum) {
  auto plain = run_cli("validate " + kFixture);
  EXPECT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_NE(plain.output.find("result: valid"), std::string::npos);
  auto checksum = run_cli("validate --checksum --json " + kFixture);
  ASSERT_EQ(checksum.exit_code, 0) << checksum.output;
  auto json = nlohmann::json::parse(checksum.standard_output);
  EXPECT_TRUE(json["valid"].get<bool>());
  EXPECT_EQ(json["files"].size(), 2u);
  EXPECT_EQ(json["files"]["model-00001-of-00002.safetensors"]["xxh3_128"].get<std::string>().size(),
            32u);
}

TEST(CliValidate, WrongTotalSizeIsAProblemExitOne) {
  ScratchDirectory scratch("cli");
  copy_bundled_model(scratch.path());
  auto index =
      nlohmann::json::parse(read_text_file(scratch.path() / "model.safetensors.index.json"));
  index["metadata"]["total_size"] = 12345;
  write_file_atomically(scratch.path() / "model.safetensors.index.json", index.dump(2));
  auto result = run_cli("validate " + quoted(scratch.path()));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("index.total_size_mismatch"), std::string::npos) << result.output;
}

TEST(CliValidate, NonFiniteWeightsAreProblemsNamingTheTensor) {
  ScratchDirectory scratch("cli");
  std::string nan_bf16("\xC0\x7F\x80\x3F", 4);  // NaN, 1.0 in little-endian BF16
  SafetensorsWriter writer(scratch.path() / "model.safetensors", {{"w.weight", DType::BF16, {2}}});
  writer.write(std::as_bytes(std::span(nan_bf16.data(), nan_bf16.size())));
  writer.commit();
  auto result = run_cli("validate --checksum " + quoted(scratch.path()));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("w.weight: 1 NaN and 0 Inf"), std::string::npos) << result.output;
}

class CliBrokenFile : public ::testing::TestWithParam<testing::BrokenFileCase> {};

TEST_P(CliBrokenFile, InspectAndValidateExitTwoWithOneLineNamingTheFile) {
  ScratchDirectory scratch("cli");
  auto path = scratch.path() / "model.safetensors";
  GetParam().file.write_to(path);
  for (const char* command : {"inspect ", "validate ", "validate --checksum "}) {
    auto result = run_cli(command + quoted(path));
    EXPECT_EQ(result.exit_code, 2) << command << result.output;
    EXPECT_EQ(result.output.rfind("quantsmith: error: " + path.string(), 0), 0u) << result.output;
    EXPECT_EQ(std::count(result.output.begin(), result.output.end(), '\n'), 1) << result.output;
  }
}

INSTANTIATE_TEST_SUITE_P(EveryFailureClass, CliBrokenFile,
                         ::testing::ValuesIn(testing::broken_file_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(CliValidate, CheckpointLevelFailuresExitTwo) {
  ScratchDirectory scratch("cli");
  copy_bundled_model(scratch.path());
  fs::remove(scratch.path() / "model-00002-of-00002.safetensors");
  auto missing_shard = run_cli("validate " + quoted(scratch.path()));
  EXPECT_EQ(missing_shard.exit_code, 2);
  EXPECT_NE(missing_shard.output.find(
                "model-00002-of-00002.safetensors listed in the index does not exist"),
            std::string::npos)
      << missing_shard.output;
  auto nowhere = run_cli("inspect " + quoted(scratch.path() / "absent"));
  EXPECT_EQ(nowhere.exit_code, 2);
  EXPECT_NE(nowhere.output.find("no such file or directory"), std::string::npos);
}

}  // namespace
}  // namespace qs

namespace qs {
namespace {

// A synthetic tiny model whose config.json a test then contradicts.
void synth_tiny(const fs::path& out) {
  auto result = run_cli("synth --preset tiny --out " + quoted(out));
  ASSERT_EQ(result.exit_code, 0) << result.output;
}

void edit_config(const fs::path& directory, const std::function<void(nlohmann::json&)>& edit) {
  auto config = nlohmann::json::parse(read_text_file(directory / "config.json"));
  edit(config);
  write_file_atomically(directory / "config.json", config.dump(2));
}

TEST(CliValidateLayout, SynthesizedModelMatchesItsConfig) {
  ScratchDirectory scratch("layout");
  synth_tiny(scratch.path() / "m");
  auto result = run_cli("validate --json " + quoted(scratch.path() / "m"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto json = nlohmann::json::parse(result.standard_output);
  EXPECT_NE(std::find(json["checks"].begin(), json["checks"].end(), "layout"),
            json["checks"].end());
  EXPECT_TRUE(json["findings"].empty()) << json["findings"].dump();
}

TEST(CliValidateLayout, MoreExpertsInConfigThanInFilesAreMissingAndMisshapen) {
  ScratchDirectory scratch("layout");
  auto model = scratch.path() / "m";
  synth_tiny(model);
  edit_config(model, [](nlohmann::json& config) { config["n_routed_experts"] = 17; });
  auto result = run_cli("validate " + quoted(model));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("layout.missing_tensor"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("model.layers.1.mlp.experts.16.gate_proj.weight"),
            std::string::npos);
  EXPECT_NE(result.output.find("layout.shape_mismatch"), std::string::npos);
  EXPECT_NE(
      result.output.find(
          "model.layers.1.mlp.gate.weight: shape [16, 256] but config.json implies [17, 256]"),
      std::string::npos)
      << result.output;
}

TEST(CliValidateLayout, FewerLayersInConfigLeaveUnexpectedTensors) {
  ScratchDirectory scratch("layout");
  auto model = scratch.path() / "m";
  synth_tiny(model);
  edit_config(model, [](nlohmann::json& config) { config["num_nextn_predict_layers"] = 0; });
  auto result = run_cli("validate " + quoted(model));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("layout.unexpected_tensor"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("model.layers.4.eh_proj.weight"), std::string::npos);
}

TEST(CliValidateLayout, ConfigWithoutADimensionIsAProblem) {
  ScratchDirectory scratch("layout");
  auto model = scratch.path() / "m";
  synth_tiny(model);
  edit_config(model, [](nlohmann::json& config) { config.erase("kv_lora_rank"); });
  auto result = run_cli("validate " + quoted(model));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("config.missing_key"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("\"kv_lora_rank\""), std::string::npos);
}

TEST(CliValidateLayout, AnF32CopyOfABf16TensorIsAWarningNotAProblem) {
  ScratchDirectory scratch("layout");
  auto model = scratch.path() / "m";
  synth_tiny(model);
  // Rewrite the single-file variant of the tiny model with one tensor widened to F32.
  auto in = Checkpoint::open(model);
  std::vector<TensorSpec> specs;
  for (const auto& location : in.tensors()) {
    const auto& info = *location.info;
    bool widen = info.name == "model.layers.0.self_attn.indexer.weights_proj.weight";
    specs.push_back({info.name, widen ? DType::F32 : info.dtype, info.shape});
  }
  auto out = scratch.path() / "widened";
  ShardedCheckpointWriter writer(out, specs, 1ull << 40);
  for (const auto& location : in.tensors()) {
    auto bytes = location.shard->read(*location.info);
    if (location.info->name == "model.layers.0.self_attn.indexer.weights_proj.weight") {
      std::vector<std::byte> widened(bytes.size() * 2);
      for (std::size_t i = 0; i < bytes.size() / 2; ++i) {
        widened[4 * i + 2] = bytes[2 * i];
        widened[4 * i + 3] = bytes[2 * i + 1];
      }
      bytes = std::move(widened);
    }
    writer.write_tensor(location.info->name, bytes);
  }
  writer.finish();
  copy_auxiliary_files(in, out);
  auto result = run_cli("validate " + quoted(out));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("layout.dtype_differs"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace qs
