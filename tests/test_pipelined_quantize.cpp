// The layer-pipelined calibrated quantize job (`quantize --calib-tokens`) on the bundled model:
// with original inputs it writes the bytes of the two-step flow (calibrate + quantize --calib);
// sequential inputs calibrate later layers on the quantized layers' outputs; a job stopped
// after a shard and resumed writes the uninterrupted bytes; --dry-run budgets each layer's
// statistics; bad input is refused with one clear line.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <nlohmann/json.hpp>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/job/executor.h"
#include "qs/ckpt/model/tensor_name.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/pipeline/pipelined_quantization.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;

const std::filesystem::path kModel = testing::bundled_model();
const std::filesystem::path kRecipe = testing::shipped_recipe("glm5-w4a16-experts-seed002.yaml");
const std::filesystem::path kTokens = (kModel / "tokens.safetensors").string() + ":calib";
constexpr int kRows = 8;  // few rows keep the suite fast; the flows must agree at any count

// Writes `path`: a recipe keeping the MTP layer BF16 and GPTQ-quantizing the routed experts,
// with `expert_settings` (keys of that rule, such as "min_tokens: 600") added to it.
std::filesystem::path experts_gptq_recipe(const std::filesystem::path& path,
                                          const std::vector<std::string>& expert_settings) {
  std::string recipe = R"(
format: compressed-tensors
rules:
  - name: MTP layer stays BF16
    mtp: true
    action: keep
  - name: experts
    category: routed_expert
    action: gptq-int4
)";
  for (const auto& setting : expert_settings) recipe += "    " + setting + "\n";
  write_file_atomically(path, recipe);
  return path;
}

// A checkpoint's files without the job file (whose fingerprint names the flow that wrote it).
std::map<std::string, std::string> checkpoint_files(const std::filesystem::path& directory) {
  auto files = testing::directory_contents(directory);
  files.erase("quantsmith-job.json");
  return files;
}

std::string quantize_arguments(const std::filesystem::path& out, const std::string& extra) {
  return fmt::format("quantize {} {} --recipe {} --max-shard-size 1MB {}", quoted(kModel),
                     quoted(out), quoted(kRecipe), extra);
}

std::string pipelined_arguments(const std::filesystem::path& out, const std::string& inputs,
                                const std::string& extra = "") {
  return quantize_arguments(out, fmt::format("--calib-tokens {} --calib-rows {} --calib-inputs {} "
                                             "{}",
                                             quoted(kTokens), kRows, inputs, extra));
}

// The expensive outputs, made once: the two-step flow and both pipelined modes.
class PipelinedQuantize : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDirectory("pipelined");
    const auto stats = scratch_->path() / "stats.qs";
    const auto calibrated =
        run_cli(fmt::format("calibrate {} --tokens {} --max-rows {} --all-experts --out {}",
                            quoted(kModel), quoted(kTokens), kRows, quoted(stats)));
    ASSERT_EQ(calibrated.exit_code, 0) << calibrated.output;
    const auto two_step = run_cli(quantize_arguments(two_step_dir(), "--calib " + quoted(stats)));
    ASSERT_EQ(two_step.exit_code, 0) << two_step.output;
    const auto original = run_cli(pipelined_arguments(original_dir(), "original"));
    ASSERT_EQ(original.exit_code, 0) << original.output;
    original_output_ = new std::string(original.output);
    const auto sequential = run_cli(pipelined_arguments(sequential_dir(), "sequential"));
    ASSERT_EQ(sequential.exit_code, 0) << sequential.output;
  }
  static void TearDownTestSuite() {
    delete scratch_;
    delete original_output_;
  }
  static std::filesystem::path two_step_dir() { return scratch_->path() / "two-step"; }
  static std::filesystem::path original_dir() { return scratch_->path() / "original"; }
  static std::filesystem::path sequential_dir() { return scratch_->path() / "sequential"; }

  static ScratchDirectory* scratch_;
  static std::string* original_output_;
};
ScratchDirectory* PipelinedQuantize::scratch_ = nullptr;
std::string* PipelinedQuantize::original_output_ = nullptr;

TEST_F(PipelinedQuantize, OriginalInputsWriteTheTwoStepFlowsBytes) {
  const auto two_step = checkpoint_files(two_step_dir());
  ASSERT_GT(two_step.size(), 5u);  // several shards: the order of items matters
  EXPECT_TRUE(checkpoint_files(original_dir()) == two_step);
  // It says what it did, layer by layer and per stage.
  EXPECT_NE(original_output_->find("layer 4/4 calibrated and quantized"), std::string::npos)
      << *original_output_;
  EXPECT_NE(original_output_->find("pipeline: 3 layers calibrated"), std::string::npos);
}

// The MTP layer (calibrated after the last decoder layer, on the final hidden states) and a
// non-expert Linear take the same statistics as in the two-step flow.
TEST(PipelinedQuantizeMtp, OriginalInputsMatchTheTwoStepFlowForMtpAndAttention) {
  ScratchDirectory scratch("pipelined-mtp");
  const auto recipe = scratch.path() / "mtp.yaml";
  write_file_atomically(recipe, R"(
format: compressed-tensors
rules:
  - name: MTP experts
    mtp: true
    category: routed_expert
    action: gptq-int4
  - name: MTP rest
    mtp: true
    action: keep
  - name: one attention output
    module: "model.layers.2.self_attn.o_proj"
    action: gptq-int4
)");
  const auto stats = scratch.path() / "stats.qs";
  auto result = run_cli(fmt::format("calibrate {} --tokens {} --max-rows 2 --all-experts --out {}",
                                    quoted(kModel), quoted(kTokens), quoted(stats)));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto quantize =
      fmt::format("quantize {} {{}} --recipe {} {{}}", quoted(kModel), quoted(recipe));
  result = run_cli(fmt::format(fmt::runtime(quantize), quoted(scratch.path() / "two-step"),
                               "--calib " + quoted(stats)));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = run_cli(
      fmt::format(fmt::runtime(quantize), quoted(scratch.path() / "one"),
                  "--calib-tokens " + quoted(kTokens) + " --calib-rows 2 --calib-inputs original"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("pipeline: 2 layers calibrated"), std::string::npos)
      << result.output;
  EXPECT_TRUE(checkpoint_files(scratch.path() / "one") ==
              checkpoint_files(scratch.path() / "two-step"));
}

// The other families (and an FP8 block-scaled source, read as the BF16 it decodes to) take the
// same statistics in both flows too.
class PipelinedQuantizeFamilies : public ::testing::TestWithParam<const char*> {};

TEST_P(PipelinedQuantizeFamilies, OriginalInputsMatchTheTwoStepFlow) {
  const auto model = testing::bundled_model(GetParam());
  const auto tokens =
      testing::bundled_model(std::string(GetParam()).starts_with("deepseek") ? "deepseek-v3-tiny"
                                                                             : GetParam()) /
      "tokens.safetensors";
  ScratchDirectory scratch("pipelined-family");
  const auto stats = scratch.path() / "stats.qs";
  auto result = run_cli(fmt::format("calibrate {} --tokens {} --max-rows 2 --all-experts --out {}",
                                    quoted(model), quoted(tokens), quoted(stats)));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto quantize =
      fmt::format("quantize {} {{}} --scheme gptq-int4 --max-shard-size 1MB {{}}", quoted(model));
  result = run_cli(fmt::format(fmt::runtime(quantize), quoted(scratch.path() / "two-step"),
                               "--calib " + quoted(stats)));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  result = run_cli(
      fmt::format(fmt::runtime(quantize), quoted(scratch.path() / "one"),
                  "--calib-tokens " + quoted(tokens) + " --calib-rows 2 --calib-inputs original"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_TRUE(checkpoint_files(scratch.path() / "one") ==
              checkpoint_files(scratch.path() / "two-step"));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PipelinedQuantizeFamilies,
                         ::testing::Values("deepseek-v3-tiny", "deepseek-v3-tiny-fp8",
                                           "qwen3-moe-tiny"));

// Layer 0 is dense and stays BF16, so layer 1 sees the same inputs either way; layers 2 and 3
// are calibrated on the outputs of quantized layers in sequential mode.
TEST_F(PipelinedQuantize, SequentialInputsCalibrateLaterLayersOnQuantizedOutputs) {
  const auto original = Checkpoint::open(original_dir());
  const auto sequential = Checkpoint::open(sequential_dir());
  auto bytes = [](const Checkpoint& checkpoint, const std::string& name) {
    const auto location = checkpoint.at(name);
    return location.shard->read(*location.info);
  };
  for (const char* expert : {"model.layers.1.mlp.experts.0.gate_proj.weight_packed",
                             "model.layers.1.mlp.experts.9.down_proj.weight_packed"})
    EXPECT_TRUE(bytes(original, expert) == bytes(sequential, expert)) << expert;
  for (const char* expert : {"model.layers.2.mlp.experts.0.gate_proj.weight_packed",
                             "model.layers.3.mlp.experts.9.down_proj.weight_packed"})
    EXPECT_FALSE(bytes(original, expert) == bytes(sequential, expert)) << expert;
  // Tensors no rule calibrates are the same.
  EXPECT_TRUE(bytes(original, "model.layers.3.self_attn.q_a_proj.weight") ==
              bytes(sequential, "model.layers.3.self_attn.q_a_proj.weight"));
}

TEST_F(PipelinedQuantize, DryRunBudgetsEachLayersStatisticsAndOrdersItemsByLayer) {
  ScratchDirectory scratch("pipelined-dry");
  const auto result =
      run_cli(pipelined_arguments(scratch.path() / "out", "original", "--dry-run --json"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto plan = nlohmann::json::parse(result.standard_output);
  const auto& layers = plan["calibration"]["layers"];
  ASSERT_EQ(layers.size(), 3u);  // MoE layers 1..3; the dense layer 0 has no calibrated item
  // One shared gate/up input (K 256) and 16 experts' down inputs (K 128), f64.
  EXPECT_EQ(layers[0]["layer"], 1);
  EXPECT_EQ(layers[0]["statistics_bytes"], 256u * 256 * 8 + 16u * 128 * 128 * 8);
  EXPECT_EQ(layers[0]["statistics_matrices"], 17);
  EXPECT_EQ(plan["calibration"]["token_rows"], kRows * 256);
  // Layer-major: no layer item after an item of a later layer.
  int last_layer = -1;
  for (const auto& item : plan["items"]) {
    const auto layer = parse_tensor_name(item["sources"][0]["name"].get<std::string>()).layer;
    if (!layer) continue;
    EXPECT_GE(static_cast<int>(*layer), last_layer) << item["sources"][0]["name"];
    last_layer = static_cast<int>(*layer);
  }
  // The text plan prints the same budget.
  const auto text = run_cli(pipelined_arguments(scratch.path() / "out", "original", "--dry-run"));
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("layer   1:   17 statistics matrices"), std::string::npos)
      << text.output;
  // Over the budget: refused before any work, naming the layer and the figure.
  const auto over =
      run_cli(pipelined_arguments(scratch.path() / "over", "original", "--calib-memory 1MiB"));
  EXPECT_EQ(over.exit_code, 2) << over.output;
  EXPECT_NE(over.output.find("layer 1 needs"), std::string::npos) << over.output;
  EXPECT_FALSE(std::filesystem::exists(scratch.path() / "over"));
}

// The job through the library, as the CLI runs it, stopped after `stop_after_shards` shards
// (0: never) or resumed.
ExecutionReport run_job(const std::filesystem::path& out, pipeline::CalibrationInputs inputs,
                        bool stop, bool resume) {
  const auto source = Checkpoint::open(kModel);
  const auto recipe = load_recipe(kRecipe);
  auto tokens = run::read_tokens_argument(kTokens.string(), "calib", kRows);
  pipeline::PipelineOptions options;
  options.inputs = inputs;
  pipeline::PipelinedQuantization job(source, std::move(tokens), options);
  QuantizerSettings settings;
  settings.device = ComputeDevice::Cpu;
  settings.stage_times = &job.quantizer_times();
  auto planned = plan_quantization(
      source, recipe,
      [&](const QuantizeRequest& request) { return make_quantize_transform(request, settings); },
      &job.statistics());
  job.attach(planned);
  ExecutionOptions execution;
  execution.output_directory = out;
  execution.max_shard_bytes = 1'000'000;
  execution.resume = resume;
  execution.fingerprint = "pipelined resume test";
  std::atomic<bool> stop_requested{stop};
  execution.stop_requested = &stop_requested;
  return job.run(planned.plan, execution, [](const Plan& plan, ExecutionOptions options) {
    return execute_plan(plan, options);
  });
}

TEST(PipelinedQuantizeResume, StoppedAndResumedGivesTheUninterruptedBytes) {
  ScratchDirectory scratch("pipelined-resume");
  for (const auto inputs :
       {pipeline::CalibrationInputs::Sequential, pipeline::CalibrationInputs::Original}) {
    const std::string label =
        inputs == pipeline::CalibrationInputs::Sequential ? "sequential" : "original";
    const auto whole = scratch.path() / (label + "-whole");
    ASSERT_FALSE(run_job(whole, inputs, false, false).interrupted);
    const auto resumed = scratch.path() / (label + "-resumed");
    // Each run stops after its first committed shard, the last one finishes the job: every
    // resume recovers the activations of a different layer.
    std::size_t runs = 1;
    auto report = run_job(resumed, inputs, true, false);
    ASSERT_TRUE(report.interrupted) << label;
    while (report.interrupted) {
      report = run_job(resumed, inputs, runs % 3 != 0, true);
      ++runs;
      EXPECT_GT(report.shards_resumed, 0u) << label;
      ASSERT_LT(runs, 40u) << label;
    }
    EXPECT_GT(runs, 3u) << label;
    EXPECT_TRUE(checkpoint_files(resumed) == checkpoint_files(whole)) << label;
  }
}

TEST(PipelinedQuantizeBadInput, RefusedWithOneClearLine) {
  ScratchDirectory scratch("pipelined-bad");
  const auto out = scratch.path() / "out";
  // Token ids outside the vocabulary (512 ids), before any work.
  const auto bad_tokens = scratch.path() / "bad-tokens.safetensors";
  {
    std::vector<std::int32_t> ids(2 * 8, 7);
    ids[11] = 9999;
    SafetensorsWriter writer(bad_tokens, {{"calib", DType::I32, {2, 8}}});
    writer.write_tensor("calib", std::as_bytes(std::span(ids)));
    writer.commit();
  }
  auto result = run_cli(quantize_arguments(out, "--calib-tokens " + quoted(bad_tokens)));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("token id 9999 (row 1, position 3) is outside the vocabulary"),
            std::string::npos)
      << result.output;
  // A GPTQ recipe with no statistics at all.
  result = run_cli(quantize_arguments(out, ""));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("--calib-tokens"), std::string::npos) << result.output;
  // Both sources of statistics.
  result = run_cli(quantize_arguments(out, "--calib stats.qs --calib-tokens " + quoted(kTokens)));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("not both"), std::string::npos) << result.output;
  // A companion flag without --calib-tokens.
  result = run_cli(quantize_arguments(out, "--calib-inputs original"));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("go with --calib-tokens"), std::string::npos) << result.output;
  // Fewer tokens than the rule's min_tokens: the threshold in the message.
  const auto greedy = experts_gptq_recipe(scratch.path() / "greedy.yaml", {"min_tokens: 100000"});
  result = run_cli(fmt::format("quantize {} {} --recipe {} --calib-tokens {} --calib-rows 2",
                               quoted(kModel), quoted(out), quoted(greedy), quoted(kTokens)));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("needs at least 100000 calibration tokens"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("gives 512"), std::string::npos) << result.output;
  EXPECT_FALSE(std::filesystem::exists(out));
}

// Routed statistics give each expert only its tokens: below a rule's min_tokens (blending
// off) GPTQ writes round-to-nearest for it, the documented fallback, counted and named.
TEST(PipelinedQuantizeBadInput, FewTokenExpertsFallBackToRoundToNearestCounted) {
  ScratchDirectory scratch("pipelined-few");
  const auto recipe =
      experts_gptq_recipe(scratch.path() / "few.yaml", {"min_tokens: 600", "blend_tokens: 0"});
  const auto result = run_cli(fmt::format(
      "quantize {} {} --recipe {} --calib-tokens {} --calib-rows 2 --calib-experts routed",
      quoted(kModel), quoted(scratch.path() / "out"), quoted(recipe), quoted(kTokens)));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // 2 rows of 256 tokens, 4 of 16 experts each: no expert reaches 600 tokens.
  EXPECT_NE(result.output.find("144 fell back to round-to-nearest"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("(minimum 600)"), std::string::npos) << result.output;
}

// NaN reaching a calibrated Linear's inputs (here from a broken norm of layer 2) stops the job
// with an error naming the layer and the module; no finished checkpoint is left.
TEST(PipelinedQuantizeBadInput, NanActivationsNameLayerAndModule) {
  ScratchDirectory scratch("pipelined-nan");
  const auto model = scratch.path() / "model";
  testing::rewrite_checkpoint(kModel, model, [](testing::EditableTensor& tensor) {
    if (tensor.spec.name == "model.layers.2.post_attention_layernorm.weight") {
      std::vector<float> values(element_count(tensor.spec.shape), std::nanf(""));
      encode_from_f32(tensor.spec.dtype, values, tensor.bytes);
    }
    return true;
  });
  const auto out = scratch.path() / "out";
  const auto result = run_cli(
      fmt::format("quantize {} {} --recipe {} --calib-tokens {} --calib-rows 2 --nan-policy zero",
                  quoted(model), quoted(out), quoted(kRecipe), quoted(kTokens)));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("model.layers.2.mlp"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("layer 2"), std::string::npos) << result.output;
  EXPECT_FALSE(std::filesystem::exists(out / "model.safetensors.index.json"));
}

}  // namespace
}  // namespace qs
