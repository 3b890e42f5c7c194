// The CLI as a user runs it: exit codes, one-line errors naming the file, --json output.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "bad_safetensors.h"
#include "qs/ckpt/file_io.h"

namespace qs {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;
using testing::ScratchDirectory;

const std::string kFixture = QS_TEST_DATA_DIR "/glm5-tiny";

std::string quoted(const fs::path& path) { return "'" + path.string() + "'"; }

void copy_fixture(const fs::path& to) {
  for (const auto& entry : fs::directory_iterator(kFixture))
    if (entry.path().filename().string().starts_with("model") ||
        entry.path().filename() == "config.json")
      fs::copy_file(entry.path(), to / entry.path().filename());
}

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
  auto json = nlohmann::json::parse(result.output);
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
  auto json = nlohmann::json::parse(checksum.output);
  EXPECT_TRUE(json["valid"].get<bool>());
  EXPECT_EQ(json["files"].size(), 2u);
  EXPECT_EQ(json["files"]["model-00001-of-00002.safetensors"]["xxh3_128"].get<std::string>().size(),
            32u);
}

TEST(CliValidate, WrongTotalSizeIsAProblemExitOne) {
  ScratchDirectory scratch("cli");
  copy_fixture(scratch.path());
  auto index = nlohmann::json::parse(read_text_file(scratch.path() / "model.safetensors.index.json"));
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
  copy_fixture(scratch.path());
  fs::remove(scratch.path() / "model-00002-of-00002.safetensors");
  auto missing_shard = run_cli("validate " + quoted(scratch.path()));
  EXPECT_EQ(missing_shard.exit_code, 2);
  EXPECT_NE(missing_shard.output.find("model-00002-of-00002.safetensors listed in the index does not exist"),
            std::string::npos)
      << missing_shard.output;
  auto nowhere = run_cli("inspect " + quoted(scratch.path() / "absent"));
  EXPECT_EQ(nowhere.exit_code, 2);
  EXPECT_NE(nowhere.output.find("no such file or directory"), std::string::npos);
}

}  // namespace
}  // namespace qs
