// `eval`, `generate` and `calibrate` as users run them on the deepseek_v3 and qwen3_moe
// fixtures: the runner's choices reach the CLI (MTP statistics only where the family has an
// MTP layer, qwen3's module names in the calibration store).

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <tuple>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/plan/calibration_store.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::quoted;
using testing::run_cli;

const std::filesystem::path kData = std::filesystem::path(QS_TEST_DATA_DIR);
const std::filesystem::path kDeepseek = kData / "deepseek-v3-tiny";
const std::filesystem::path kQwen = kData / "qwen3-moe-tiny";

nlohmann::json eval_json(const std::filesystem::path& reference,
                         const std::filesystem::path& model) {
  const auto result =
      run_cli("eval --ref " + quoted(reference) + " --model " + quoted(model) + " --tokens " +
              quoted(reference / "tokens.safetensors") + " --max-rows 4 --decode-steps 4 --json");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return nlohmann::json::parse(result.standard_output);
}

std::vector<std::int32_t> reference_ids(const std::filesystem::path& model,
                                        const std::string& name) {
  const auto reference = Checkpoint::open(model / "reference.safetensors");
  const auto location = reference.at(name);
  const auto bytes = location.shard->read(*location.info);
  std::vector<std::int32_t> ids(bytes.size() / 4);
  std::memcpy(ids.data(), bytes.data(), bytes.size());
  return ids;
}

TEST(FamilyEvalCli, DeepseekAgainstItselfIsExactWithMtpAcceptance) {
  const auto report = eval_json(kDeepseek, kDeepseek);
  EXPECT_EQ(report["positions"], 4 * 32);
  EXPECT_EQ(report["kld"]["mean"], 0.0);
  EXPECT_EQ(report["top1_agreement"]["mean"], 1.0);
  EXPECT_EQ(report["decode"]["js_mean"], 0.0);
  ASSERT_TRUE(report["mtp_acceptance"].is_object());
  EXPECT_EQ(report["mtp_acceptance"]["reference"], report["mtp_acceptance"]["model"]);
}

TEST(FamilyEvalCli, QwenHasNoMtpLayerAndSaysSo) {
  const auto report = eval_json(kQwen, kQwen);
  EXPECT_EQ(report["kld"]["mean"], 0.0);
  EXPECT_EQ(report["ppl"]["ratio"], 1.0);
  EXPECT_EQ(report["mtp_acceptance"], "no MTP layer");
  const auto text =
      run_cli("eval --ref " + quoted(kQwen) + " --model " + quoted(kQwen) + " --tokens " +
              quoted(kQwen / "tokens.safetensors") + " --max-rows 2 --decode-steps 0");
  EXPECT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.standard_output.find("MTP acceptance       no MTP layer"), std::string::npos)
      << text.standard_output;
}

TEST(FamilyEvalCli, ModelsOfDifferentFamiliesAreRefused) {
  const auto result =
      run_cli("eval --ref " + quoted(kDeepseek) + " --model " + quoted(kQwen) + " --tokens " +
              quoted(kQwen / "tokens.safetensors") + " --max-rows 1");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("different families"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("deepseek_v3"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("qwen3_moe"), std::string::npos) << result.output;
}

class FamilyGenerateCli : public ::testing::TestWithParam<const char*> {};

TEST_P(FamilyGenerateCli, GreedyTokensAreTransformers) {
  const auto model = kData / GetParam();
  const auto result =
      run_cli("generate " + quoted(model) + " --tokens " + quoted(model / "reference.safetensors") +
              ":greedy_prompt --max-new 16 --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto out = nlohmann::json::parse(result.standard_output);
  auto expected = reference_ids(model, "greedy_tokens");
  // generate stops after config.json's EOS id (1 in both fixtures).
  const auto eos = std::find(expected.begin(), expected.end(), 1);
  if (eos != expected.end()) expected.erase(eos + 1, expected.end());
  EXPECT_EQ(out["tokens"].get<std::vector<std::int32_t>>(), expected);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FamilyGenerateCli,
                         ::testing::Values("deepseek-v3-tiny", "qwen3-moe-tiny"));

TEST(FamilyCalibrateCli, QwenModuleNamesFlowIntoTheStore) {
  testing::ScratchDirectory scratch("calibrate-qwen");
  const auto result =
      run_cli("calibrate " + quoted(kQwen) + " --tokens " + quoted(kQwen / "tokens.safetensors") +
              ":calib --out " + quoted(scratch.path() / "stats.qs") + " --all-experts");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto store = CalibrationStore::open(scratch.path() / "stats.qs");
  const std::uint64_t rows = 32 * 32;
  for (const char* projection : {"q_proj", "k_proj", "v_proj"}) {
    const auto* entry = store.find(std::string("model.layers.1.self_attn.") + projection);
    ASSERT_TRUE(entry) << projection;
    EXPECT_EQ(entry->tokens, rows);
    EXPECT_EQ(entry->in_features, 256u);
  }
  ASSERT_TRUE(store.find("model.layers.1.self_attn.o_proj"));
  EXPECT_EQ(store.find("model.layers.1.self_attn.o_proj")->in_features, 6u * 64u);
  EXPECT_TRUE(store.find("model.layers.0.mlp.gate"));
  const auto* gate = store.find("model.layers.0.mlp.experts.15.gate_proj");
  ASSERT_TRUE(gate);
  EXPECT_EQ(gate->shared_with, "model.layers.0.mlp.experts.gate_up_input");
  EXPECT_EQ(store.find("model.layers.0.mlp.experts.15.down_proj")->tokens, rows);
  for (const auto& entry : store.entries()) {
    EXPECT_EQ(entry.module.find("shared_experts"), std::string::npos) << entry.module;
    EXPECT_EQ(entry.module.find("q_a_proj"), std::string::npos) << entry.module;
  }
  ASSERT_EQ(store.routing().size(), 2u);
  for (const auto& [layer, counts] : store.routing()) {
    std::uint64_t total = 0;
    for (auto count : counts) total += count;
    EXPECT_EQ(total, rows * 4) << layer;
  }
}

TEST(FamilyCalibrateCli, DeepseekHasLatentAttentionMtpAndNoIndexer) {
  testing::ScratchDirectory scratch("calibrate-deepseek");
  const auto result = run_cli("calibrate " + quoted(kDeepseek) + " --tokens " +
                              quoted(kDeepseek / "tokens.safetensors") + ":calib --out " +
                              quoted(scratch.path() / "stats.qs"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto store = CalibrationStore::open(scratch.path() / "stats.qs");
  EXPECT_TRUE(store.find("model.layers.0.mlp.gate_proj"));  // layer 0 dense
  EXPECT_TRUE(store.find("model.layers.1.self_attn.kv_b_proj"));
  EXPECT_TRUE(store.find("model.layers.2.mlp.shared_experts.down_proj"));
  EXPECT_TRUE(store.find("model.layers.3.eh_proj"));  // the MTP layer
  EXPECT_TRUE(store.find("model.layers.3.mlp.gate"));
  for (const auto& entry : store.entries())
    EXPECT_EQ(entry.module.find("indexer"), std::string::npos) << entry.module;
  // Grouped routing: every token still picks 4 experts, within its 2 best groups.
  std::uint64_t total = 0;
  for (auto count : store.routing().at(1)) total += count;
  EXPECT_EQ(total, 32u * 32u * 4u);
}

// calibrate → GPTQ → eval: every Linear GPTQ quantizes finds its statistics under the family's
// module names (the all-experts store's shared gate/up input included) and beats
// round-to-nearest on its calibration inputs; eval reads the result.
class FamilyGptq : public ::testing::TestWithParam<const char*> {};

TEST_P(FamilyGptq, CalibratedQuantizationUsesEveryModulesStatistics) {
  const auto model = kData / GetParam();
  testing::ScratchDirectory scratch("family-gptq");
  const auto calibrated =
      run_cli("calibrate " + quoted(model) + " --tokens " + quoted(model / "tokens.safetensors") +
              ":calib --out " + quoted(scratch.path() / "stats.qs") + " --all-experts");
  ASSERT_EQ(calibrated.exit_code, 0) << calibrated.output;
  const auto quantized =
      run_cli("quantize " + quoted(model) + " " + quoted(scratch.path() / "gptq") +
              " --scheme gptq-int4 --calib " + quoted(scratch.path() / "stats.qs") + " --json");
  ASSERT_EQ(quantized.exit_code, 0) << quantized.output;
  const auto report = nlohmann::json::parse(quantized.standard_output);
  ASSERT_GT(report["quality"].size(), 100u);
  bool attention_seen = false;
  for (const auto& entry : report["quality"]) {
    const auto tensor = entry["tensor"].get<std::string>();
    attention_seen |= tensor.find("self_attn.") != std::string::npos;
    EXPECT_TRUE(entry["fallback"].is_null()) << tensor << ": " << entry["fallback"];
    EXPECT_LT(entry["gptq_relative_loss"].get<double>(), entry["rtn_relative_loss"].get<double>())
        << tensor;
  }
  EXPECT_TRUE(attention_seen);
  const auto evaluated = eval_json(model, scratch.path() / "gptq");
  EXPECT_GT(evaluated["kld"]["mean"].get<double>(), 0.0);
  EXPECT_LT(evaluated["kld"]["mean"].get<double>(), 5.0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FamilyGptq,
                         ::testing::Values("deepseek-v3-tiny", "qwen3-moe-tiny"));

// The new pieces (grouped and softmax routing, GQA, YaRN) keep the runner's promise: the same
// bytes whatever the thread count or OpenBLAS' threads.
TEST_P(FamilyGptq, CalibrateAndEvalGiveTheSameBytesHoweverThreaded) {
  const auto model = kData / GetParam();
  testing::ScratchDirectory scratch("family-threads");
  std::string first_statistics, first_eval;
  for (const auto& [label, prefix, flags] :
       {std::tuple{"threads-1", "", "--threads 1"}, std::tuple{"threads-2", "", "--threads 2"},
        std::tuple{"openblas-3", "OPENBLAS_NUM_THREADS=3", ""}}) {
    const auto statistics = scratch.path() / (std::string(label) + ".qs");
    const auto calibrated = testing::run_cli_after(
        prefix, "calibrate " + quoted(model) + " --tokens " + quoted(model / "tokens.safetensors") +
                    ":calib --max-rows 8 --all-experts --out " + quoted(statistics) + " " + flags);
    ASSERT_EQ(calibrated.exit_code, 0) << label << ": " << calibrated.output;
    const auto evaluated =
        testing::run_cli_after(prefix, "eval --ref " + quoted(model) + " --model " + quoted(model) +
                                           " --tokens " + quoted(model / "tokens.safetensors") +
                                           " --max-rows 2 --decode-steps 2 --json " + flags);
    ASSERT_EQ(evaluated.exit_code, 0) << label << ": " << evaluated.output;
    std::ifstream stream(statistics, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(stream)), {});
    if (first_statistics.empty()) {
      first_statistics = bytes;
      first_eval = evaluated.standard_output;
      continue;
    }
    EXPECT_EQ(bytes, first_statistics) << label;
    EXPECT_EQ(evaluated.standard_output, first_eval) << label;
  }
}

// A copy of fixture `name` whose config.json is edited by `edit`.
std::filesystem::path edited_fixture(const testing::ScratchDirectory& scratch, const char* name,
                                     const std::function<void(nlohmann::json&)>& edit) {
  const auto copy = scratch.path() / name;
  std::filesystem::copy(kData / name, copy, std::filesystem::copy_options::recursive);
  nlohmann::json config;
  std::ifstream(copy / "config.json") >> config;
  edit(config);
  std::ofstream(copy / "config.json") << config.dump(2);
  return copy;
}

TEST(FamilyRunnerBadInput, RopeScalingTheRunnerDoesNotApplyIsRefused) {
  testing::ScratchDirectory scratch("rope-linear");
  const auto model = edited_fixture(scratch, "qwen3-moe-tiny", [](nlohmann::json& config) {
    config["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  });
  const auto result = run_cli("generate " + quoted(model) + " --prompt hi --max-new 2");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("rope_scaling type \"linear\""), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("config.json"), std::string::npos) << result.output;
}

TEST(FamilyRunnerBadInput, GroupsThatDoNotDivideTheExpertsAreRefused) {
  testing::ScratchDirectory scratch("n-group");
  const auto model = edited_fixture(scratch, "deepseek-v3-tiny",
                                    [](nlohmann::json& config) { config["n_group"] = 3; });
  for (const std::string command :
       {"generate " + quoted(model) + " --prompt hi --max-new 2",
        "eval --ref " + quoted(model) + " --model " + quoted(model) + " --tokens " +
            quoted(model / "tokens.safetensors") + " --max-rows 1"}) {
    const auto result = run_cli(command);
    EXPECT_EQ(result.exit_code, 2) << command << "\n" << result.output;
    EXPECT_NE(result.output.find("n_group"), std::string::npos) << result.output;
    EXPECT_NE(result.output.find("config.json"), std::string::npos) << result.output;
  }
}

}  // namespace
}  // namespace qs
