// A standalone MTP draft as vLLM loads it beside its serving target: vLLM builds the draft
// with the target's quantization config, so `mtp extract --target` must requantize every
// draft Linear to the scheme that config resolves it to (BF16 where it ignores it), refuse
// schemes it cannot produce before writing a byte, and `validate DRAFT --target` must report
// a draft that holds anything else. Also the engine-quirks table's warnings.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/formats/compressed_tensors_config.h"
#include "qs/ckpt/validate/engine_quirks.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/model/tensor_name.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;
using testing::shipped_recipe;

const std::filesystem::path kModel = testing::bundled_model();

// The layouts of a draft's Linears (the modules validate's config check accounts for), by
// module path.
std::map<std::string, WeightLayout> linear_layouts(const std::filesystem::path& directory) {
  auto checkpoint = Checkpoint::open(directory);
  std::map<std::string, WeightLayout> layouts;
  for (const auto& [path, parameters] : modules_of(checkpoint))
    if (is_config_accountable(parameters)) layouts[path] = classify_module(parameters);
  return layouts;
}

// Sources built once for the suite: the NVFP4 checkpoint (MTP layer included) the draft is
// extracted from, and the targets it is paired with.
class DraftTarget : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDirectory("draft-target");
    quantize("nvfp4", "--recipe " + quoted(shipped_recipe("glm5-nvfp4-all-with-mtp.yaml")));
    quantize("int4-g32-target",
             "--recipe " + quoted(shipped_recipe("glm5-int4-g32-target-seed003.yaml")));
    // Seed 000's hybrid: MTP block INT8 channel-wise, NVFP4 routed experts, INT8 g128 rest.
    quantize("w8a16", "--recipe " + quoted(shipped_recipe("glm5-w8a16-int8mix-seed000.yaml")));
    quantize("nvfp4-experts", "--recipe " + quoted(shipped_recipe("glm5-nvfp4-seed001.yaml")) +
                                  " --param boundary_layers=0");
    const auto splice = run_cli(
        "splice " + quoted(dir("hybrid")) + " --base " + quoted(dir("w8a16")) + " --take \"" +
        dir("nvfp4-experts").string() + ":category=routed_expert;layers=1-3\"");
    ASSERT_EQ(splice.exit_code, 0) << splice.output;
  }
  static void TearDownTestSuite() {
    delete scratch_;
    scratch_ = nullptr;
  }
  static std::filesystem::path dir(const std::string& name) { return scratch_->path() / name; }
  static void quantize(const std::string& out, const std::string& arguments) {
    const auto result =
        run_cli("quantize " + quoted(kModel) + " " + quoted(dir(out)) + " " + arguments);
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }
  // `mtp extract` of the NVFP4 source into a fresh directory.
  static testing::CliResult extract(const std::string& out, const std::string& arguments) {
    return run_cli("mtp extract " + quoted(dir("nvfp4")) + " " + quoted(dir(out)) + " " +
                   arguments);
  }
  static testing::CliResult validate(const std::string& draft, const std::string& target,
                                     const std::string& extra = "") {
    return run_cli("validate " + quoted(dir(draft)) + " --target " + target + extra);
  }
  static ScratchDirectory* scratch_;
};
ScratchDirectory* DraftTarget::scratch_ = nullptr;

TEST_F(DraftTarget, Bf16TargetGivesAnAllBf16Draft) {
  const auto result = extract("draft-bf16", "--target " + quoted(kModel));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  for (const auto& [module, layout] : linear_layouts(dir("draft-bf16")))
    EXPECT_EQ(layout, WeightLayout::Dense) << module;
  const auto config = nlohmann::json::parse(read_text_file(dir("draft-bf16") / "config.json"));
  EXPECT_FALSE(config.contains("quantization_config"));
  const auto check = validate("draft-bf16", quoted(kModel));
  EXPECT_EQ(check.exit_code, 0) << check.output;

  // An NVFP4 target whose exclude_modules lists its MTP layer (seed 001's layout): BF16 too.
  const auto excluded = extract("draft-excluded", "--target " + quoted(dir("nvfp4-experts")));
  ASSERT_EQ(excluded.exit_code, 0) << excluded.output;
  for (const auto& [module, layout] : linear_layouts(dir("draft-excluded")))
    EXPECT_EQ(layout, WeightLayout::Dense) << module;
}

TEST_F(DraftTarget, Nvfp4TargetGivesNvfp4WhereTheTargetQuantizesAndBf16WhereItExcludes) {
  const auto result = extract("draft-nvfp4", "--target " + quoted(dir("nvfp4")));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::size_t nvfp4 = 0;
  for (const auto& [module, layout] : linear_layouts(dir("draft-nvfp4"))) {
    const auto role = parse_tensor_name(module + ".weight").role;
    const bool kept = role == TensorRole::MtpEhProj || role == TensorRole::RouterGate ||
                      category(role) == TensorCategory::Indexer;
    EXPECT_EQ(layout, kept ? WeightLayout::Dense : WeightLayout::Nvfp4Modelopt) << module;
    nvfp4 += !kept;
  }
  EXPECT_GT(nvfp4, 50u);
  EXPECT_TRUE(std::filesystem::exists(dir("draft-nvfp4") / "hf_quant_config.json"));
  const auto check = validate("draft-nvfp4", quoted(dir("nvfp4")));
  EXPECT_EQ(check.exit_code, 0) << check.output;
}

TEST_F(DraftTarget, Int4Group32TargetGivesTheSeed003Draft) {
  const auto result = extract("draft-int4", "--target " + quoted(dir("int4-g32-target")));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto draft = Checkpoint::open(dir("draft-int4"));
  const auto& zero_point = draft.at("model.layers.4.mlp.experts.0.down_proj.weight_zero_point");
  EXPECT_EQ(zero_point.info->dtype, DType::I32);
  // Group 32 over K = the expert intermediate size.
  const auto shape = draft.at("model.layers.4.mlp.experts.0.down_proj.weight_shape");
  const auto scales = draft.at("model.layers.4.mlp.experts.0.down_proj.weight_scale");
  EXPECT_EQ(scales.info->shape[1] * 32,
            logical_weight_shape(modules_of(draft).at("model.layers.4.mlp.experts.0.down_proj"),
                                 WeightLayout::PackQuantized)
                .value()[1]);
  const auto config = nlohmann::json::parse(read_text_file(dir("draft-int4") / "config.json"));
  const auto& weights = config["quantization_config"]["config_groups"]["group_0"]["weights"];
  EXPECT_EQ(weights["num_bits"], 4);
  EXPECT_EQ(weights["group_size"], 32);
  EXPECT_EQ(weights["symmetric"], false);
  const auto check = validate("draft-int4", quoted(dir("int4-g32-target")));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  (void)shape;
}

// Seed 000's MTP block is INT8 channel-wise: the draft's routed experts too, and validate
// warns that vLLM 0.33/0.34 on Hopper cannot build them without --moe-backend marlin.
TEST_F(DraftTarget, HybridTargetGivesInt8ChannelAndTheEngineQuirkWarning) {
  const auto result = extract("draft-hybrid", "--target " + quoted(dir("hybrid")));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto draft = Checkpoint::open(dir("draft-hybrid"));
  const auto modules = modules_of(draft);
  const auto& expert = modules.at("model.layers.4.mlp.experts.0.gate_proj");
  const auto options = pack_quantized_options("expert", expert, "", "test");
  EXPECT_EQ(options.bits, 8);
  EXPECT_EQ(options.group_size, kChannelGroup);
  EXPECT_TRUE(options.symmetric);

  const auto check = validate("draft-hybrid", quoted(dir("hybrid")), " --json");
  EXPECT_EQ(check.exit_code, 0) << check.output;  // a warning leaves the exit code alone
  const auto json = nlohmann::json::parse(check.standard_output);
  ASSERT_EQ(json["engine_quirks"].size(), 1u) << check.output;
  const auto& quirk = json["engine_quirks"][0];
  EXPECT_EQ(quirk["id"], "vllm_wna16_moe_channel_hopper");
  EXPECT_EQ(quirk["modules"], nlohmann::json::array({"model.layers.4.mlp.experts"}));
  EXPECT_NE(quirk["workaround"].get<std::string>().find("--moe-backend marlin"), std::string::npos);
  bool warned = false;
  for (const auto& finding : json["findings"])
    warned |= finding["kind"] == "engine.vllm_wna16_moe_channel_hopper" &&
              finding["severity"] == "warning";
  EXPECT_TRUE(warned) << check.output;

  // The hybrid itself carries the same MTP block.
  const auto own = run_cli("validate " + quoted(dir("hybrid")));
  EXPECT_EQ(own.exit_code, 0) << own.output;
  EXPECT_NE(own.output.find("engine.vllm_wna16_moe_channel_hopper"), std::string::npos)
      << own.output;
}

// Today's draft (`--requant int4-g32`) beside a BF16 or an NVFP4 target: every quantized
// Linear is reported, with what vLLM builds instead.
TEST_F(DraftTarget, ValidateTargetReportsTheMismatchedDraft) {
  const auto result = extract("draft-requant", "--requant int4-g32");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  for (const auto& target : {quoted(kModel), quoted(dir("nvfp4"))}) {
    const auto check = validate("draft-requant", target, " --json");
    EXPECT_EQ(check.exit_code, 1) << check.output;
    const auto json = nlohmann::json::parse(check.standard_output);
    std::size_t mismatches = 0;
    for (const auto& finding : json["findings"])
      if (finding["kind"] == "target.scheme_mismatch") {
        ++mismatches;
        EXPECT_NE(finding["message"].get<std::string>().find("stored pack-quantized int4-g32"),
                  std::string::npos)
            << finding.dump();
      }
    EXPECT_EQ(mismatches, linear_layouts(dir("draft-requant")).size() - 5)  // eh_proj, router,
        << check.output;  // indexer wk / weights_proj and wq_b stay BF16 in both
  }
  // Beside the target it was made for, it is right.
  const auto check = validate("draft-requant", quoted(dir("int4-g32-target")));
  EXPECT_EQ(check.exit_code, 0) << check.output;
}

// A target config alone (no shards) is enough; schemes we cannot produce are refused before
// any byte is written, naming the module and the scheme.
TEST_F(DraftTarget, UnproducibleTargetSchemesAreRefusedBeforeWriting) {
  auto write_target = [&](const std::string& name, const nlohmann::json& quantization) {
    auto config = nlohmann::json::parse(read_text_file(kModel / "config.json"));
    config["quantization_config"] = quantization;
    std::filesystem::create_directories(dir(name));
    write_file_atomically(dir(name) / "config.json", config.dump(2));
    return dir(name) / "config.json";
  };
  const auto fp8 = write_target(
      "fp8-target",
      {{"quant_method", "compressed-tensors"},
       {"format", "float-quantized"},
       {"config_groups",
        {{"group_0",
          {{"targets", {"Linear"}},
           {"weights", {{"num_bits", 8}, {"type", "float"}, {"strategy", "channel"}}},
           {"input_activations",
            {{"num_bits", 8}, {"type", "float"}, {"strategy", "token"}, {"dynamic", true}}}}}}},
       {"ignore", {"lm_head", "re:.*mlp\\.gate$"}}});
  auto result = extract("refused-fp8", "--target " + quoted(fp8));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("model.layers.4."), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("float8"), std::string::npos) << result.output;
  EXPECT_FALSE(std::filesystem::exists(dir("refused-fp8")));

  // Regex targets for the main layers only: vLLM finds no target for the MTP block.
  const auto partial = write_target(
      "partial-target",
      {{"quant_method", "compressed-tensors"},
       {"format", "pack-quantized"},
       {"config_groups",
        {{"group_0",
          {{"targets", {"re:^model\\.layers\\.[0-3]\\..*"}},
           {"weights",
            {{"num_bits", 4}, {"type", "int"}, {"strategy", "group"}, {"group_size", 32}}}}}}},
       {"ignore", {"lm_head"}}});
  result = extract("refused-partial", "--target " + quoted(partial));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("Unable to find matching target"), std::string::npos)
      << result.output;
  EXPECT_FALSE(std::filesystem::exists(dir("refused-partial")));

  // W4A4 NVFP4 needs calibrated input scales of the draft.
  const auto w4a4 = write_target(
      "w4a4-target",
      {{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}, {"exclude_modules", {"lm_head"}}});
  result = extract("refused-w4a4", "--target " + quoted(w4a4));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("W4A4"), std::string::npos) << result.output;
  EXPECT_FALSE(std::filesystem::exists(dir("refused-w4a4")));

  result = extract("refused-both", "--requant int4 --target " + quoted(kModel));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("--target"), std::string::npos) << result.output;
  result = extract("refused-missing", "--target " + quoted(dir("no-such-target")));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("no such file"), std::string::npos) << result.output;
}

// ---- the engine-quirks table ----

ConfigGroupArguments int_group(int bits, const std::string& strategy, std::int64_t group_size) {
  ConfigGroupArguments group;
  group.name = "group_0";
  group.format = "pack-quantized";
  group.type = "int";
  group.bits = bits;
  group.strategy = strategy;
  group.group_size = group_size;
  return group;
}

TEST(EngineQuirks, ChannelWiseWna16RoutedExpertsHitTheHopperMoeKernelRow) {
  const auto channel = int_group(8, "channel", -1);
  const auto grouped = int_group(8, "group", 128);
  auto nvfp4 = int_group(4, "tensor_group", 16);
  nvfp4.type = "float";
  nvfp4.format = "nvfp4-pack-quantized";
  auto w8a8 = channel;
  w8a8.activations_quantized = true;
  const std::vector<QuirkSubject> subjects = {
      {"model.layers.4.mlp.experts", true, &channel},
      {"model.layers.4.self_attn.o_proj", false, &channel},  // a Linear: Marlin or Machete
      {"model.layers.3.mlp.experts", true, &grouped},
      {"model.layers.2.mlp.experts", true, &nvfp4},
      {"model.layers.1.mlp.experts", true, &w8a8},
  };
  const auto hits = evaluate_engine_quirks(subjects);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].quirk->id, "vllm_wna16_moe_channel_hopper");
  EXPECT_EQ(hits[0].units, std::vector<std::string>{"model.layers.4.mlp.experts"});
  const auto message = hits[0].message();
  for (const char* part : {"vLLM", "0.33", "Hopper", "--moe-backend marlin", "group_0"})
    EXPECT_NE(message.find(part), std::string::npos) << message;
}

TEST(EngineQuirks, ValidateWarnsOnAFullModelWithChannelWiseInt8Experts) {
  ScratchDirectory scratch("quirk-int8-channel");
  const auto quantized = run_cli("quantize " + quoted(kModel) + " " +
                                 quoted(scratch.path() / "out") + " --scheme int8-channel");
  ASSERT_EQ(quantized.exit_code, 0) << quantized.output;
  const auto check = run_cli("validate " + quoted(scratch.path() / "out") + " --json");
  EXPECT_EQ(check.exit_code, 0) << check.output;
  const auto json = nlohmann::json::parse(check.standard_output);
  ASSERT_EQ(json["engine_quirks"].size(), 1u) << check.output;
  // Every MoE layer of the main model (the MTP layer stays BF16 under --scheme).
  EXPECT_EQ(json["engine_quirks"][0]["modules"].size(), 3u) << check.output;
}

}  // namespace
}  // namespace qs
