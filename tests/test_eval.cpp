// Evaluation: the divergence statistics on known distributions, and `quantsmith eval` as users
// run it (a model against itself gives exactly 0; an NVFP4 quantization a small KLD; bad
// input exits 2).

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qs/ckpt/io/safetensors.h"
#include "qs/run/divergence_statistics.h"
#include "test_support.h"

namespace qs::run {
namespace {

using testing::quoted;
using testing::run_cli;
using testing::shipped_recipe;

const std::filesystem::path kModel = testing::bundled_model();

TEST(DivergenceStatistics, IdenticalDistributionsGiveZero) {
  DivergenceAccumulator accumulator;
  const std::vector<float> logits = {1.0f, 2.0f, -3.0f, 0.5f};
  for (int i = 0; i < 5; ++i) accumulator.add(logits, logits, i % 4);
  const auto report = accumulator.report();
  EXPECT_EQ(report.positions, 5u);
  EXPECT_EQ(report.kld.mean, 0.0);
  EXPECT_EQ(report.top1_agreement.mean, 1.0);
  EXPECT_EQ(report.delta_p.mean, 0.0);
  EXPECT_EQ(report.ppl_ratio, 1.0);
  EXPECT_EQ(jensen_shannon(logits, logits), 0.0);
}

TEST(DivergenceStatistics, MatchesClosedFormsOnTwoTokens) {
  // P = (0.5, 0.5), Q = softmax(ln 3, 0) = (0.75, 0.25).
  const std::vector<float> p = {0.0f, 0.0f};
  const std::vector<float> q = {static_cast<float>(std::log(3.0)), 0.0f};
  DivergenceAccumulator accumulator;
  accumulator.add(p, q, 1);
  const auto report = accumulator.report();
  const double kld = 0.5 * std::log(0.5 / 0.75) + 0.5 * std::log(0.5 / 0.25);
  EXPECT_NEAR(report.kld.mean, kld, 1e-6);
  EXPECT_NEAR(report.delta_p.mean, 0.25 - 0.5, 1e-6);
  EXPECT_NEAR(report.reference_ppl, 2.0, 1e-6);
  EXPECT_NEAR(report.test_ppl, 4.0, 1e-6);
  EXPECT_NEAR(report.ppl_ratio, 2.0, 1e-6);
  EXPECT_EQ(report.top1_agreement.mean, 1.0);  // ties go to the first token in both
  const double m0 = 0.625, m1 = 0.375;
  const double js = 0.5 * (0.5 * std::log(0.5 / m0) + 0.5 * std::log(0.5 / m1)) +
                    0.5 * (0.75 * std::log(0.75 / m0) + 0.25 * std::log(0.25 / m1));
  EXPECT_NEAR(jensen_shannon(p, q), js, 1e-6);
  EXPECT_NEAR(jensen_shannon(q, p), js, 1e-6);
}

nlohmann::json eval_json(const std::filesystem::path& model) {
  auto result =
      run_cli("eval --ref " + quoted(kModel) + " --model " + quoted(model) + " --tokens " +
              quoted(kModel / "tokens.safetensors") + " --max-rows 4 --decode-steps 8 --json");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return nlohmann::json::parse(result.standard_output);
}

TEST(EvalCli, ModelAgainstItselfIsExact) {
  const auto report = eval_json(kModel);
  EXPECT_EQ(report["positions"], 4 * 256);
  EXPECT_EQ(report["kld"]["mean"], 0.0);
  EXPECT_EQ(report["top1_agreement"]["mean"], 1.0);
  EXPECT_EQ(report["ppl"]["ratio"], 1.0);
  EXPECT_EQ(report["decode"]["js_mean"], 0.0);
  EXPECT_EQ(report["mtp_acceptance"]["reference"], report["mtp_acceptance"]["model"]);
}

TEST(EvalCli, Nvfp4QuantizationGivesASmallNonZeroKld) {
  testing::ScratchDirectory scratch("eval-nvfp4");
  auto quantized = run_cli(
      "quantize " + quoted(kModel) + " " + quoted(scratch.path() / "q") + " --recipe " +
      quoted(shipped_recipe("modelopt-nvfp4-experts-only.yaml")) + " --format compressed-tensors");
  ASSERT_EQ(quantized.exit_code, 0) << quantized.output;
  const auto report = eval_json(scratch.path() / "q");
  EXPECT_GT(report["kld"]["mean"].get<double>(), 0.0);
  EXPECT_LT(report["kld"]["mean"].get<double>(), 0.05);
  EXPECT_GT(report["top1_agreement"]["mean"].get<double>(), 0.9);
  EXPECT_GT(report["mtp_acceptance"]["model"].get<double>(), 0.5);
}

TEST(EvalCli, RefusesBadTokensAndMismatchedVocabularies) {
  testing::ScratchDirectory scratch("eval-bad");
  const auto write_tokens = [&](const std::string& name, std::vector<std::int32_t> ids,
                                Shape shape) {
    SafetensorsWriter writer(scratch.path() / name, {{"ids", DType::I32, shape}});
    writer.write(std::as_bytes(std::span(ids)));
    writer.commit();
  };
  write_tokens("out_of_vocab.safetensors", {256, 40, 600, 41}, {1, 4});
  write_tokens("empty.safetensors", {}, {0, 4});
  for (const auto& [file, kind] : std::vector<std::pair<std::string, std::string>>{
           {"out_of_vocab.safetensors", "outside the vocabulary"},
           {"empty.safetensors", "token tensor is empty"}}) {
    auto result = run_cli("eval --ref " + quoted(kModel) + " --model " + quoted(kModel) +
                          " --tokens " + quoted(scratch.path() / file));
    EXPECT_EQ(result.exit_code, 2) << result.output;
    EXPECT_NE(result.output.find(kind), std::string::npos) << result.output;
  }
  ASSERT_EQ(
      run_cli("synth --preset tiny --vocab 1024 --out " + quoted(scratch.path() / "big")).exit_code,
      0);
  auto mismatch =
      run_cli("eval --ref " + quoted(kModel) + " --model " + quoted(scratch.path() / "big") +
              " --tokens " + quoted(kModel / "tokens.safetensors") + " --max-rows 1");
  EXPECT_EQ(mismatch.exit_code, 2) << mismatch.output;
  EXPECT_NE(mismatch.output.find("vocabularies"), std::string::npos) << mismatch.output;
}

TEST(EvalCli, RefusesAConfigThatDoesNotMatchTheTensors) {
  testing::ScratchDirectory scratch("eval-config");
  const auto model = scratch.path() / "model";
  std::filesystem::create_directories(model);
  testing::copy_bundled_model(model);
  auto config = nlohmann::json::parse(std::ifstream(model / "config.json"));
  config["kv_lora_rank"] = 96;  // kv_b_proj stores 128 inputs
  std::ofstream(model / "config.json") << config.dump();
  auto result = run_cli("generate " + quoted(model) + " --prompt x --max-new 1");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  // The layout check every job runs on its sources (validate's) finds it before any layer runs.
  EXPECT_NE(result.output.find("config.json implies"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("kv_a_proj_with_mqa.weight"), std::string::npos) << result.output;
}

TEST(GenerateCli, ContinuesTokensAndPrompts) {
  auto result =
      run_cli("generate " + quoted(kModel) + " --tokens " +
              quoted(kModel / "reference.safetensors") + ":greedy_prompt --max-new 32 --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto report = nlohmann::json::parse(result.standard_output);
  // The reference's greedy continuation of that prompt (README: "ror()\n" then spaces).
  EXPECT_EQ(report["text"].get<std::string>().substr(0, 6), "ror()\n");
  EXPECT_EQ(report["tokens"].size(), 32u);
  auto prompt = run_cli("generate " + quoted(kModel) + " --prompt 'def f(' --max-new 8 --json");
  ASSERT_EQ(prompt.exit_code, 0) << prompt.output;
  EXPECT_EQ(nlohmann::json::parse(prompt.standard_output)["prompt"][0], 256);  // BOS first
  EXPECT_EQ(run_cli("generate " + quoted(kModel)).exit_code, 2);
}

}  // namespace
}  // namespace qs::run
