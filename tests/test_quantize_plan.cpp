// Recipes, the quantize planner and the configs it leads to: decisions come from the first
// matching rule, unsatisfiable rules fail before any I/O, and the compressed-tensors config
// resolves every Linear in vLLM the way the checkpoint stores it.

#include <gtest/gtest.h>

#include <map>

#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/ckpt/plan/recipe.h"
#include "qs/ckpt/io/safetensors.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::error_kind_of;
using testing::shipped_recipe;

const std::filesystem::path kModel = testing::bundled_model();

// Plans without running anything: quantizing items get a copy transform as a stand-in.
QuantizePlan plan_for(const Checkpoint& source, const Recipe& recipe) {
  return plan_quantization(source, recipe,
                           [](const QuantizeRequest&) { return make_copy_transform(); });
}

std::map<std::string, TensorDecision> decisions_by_name(const QuantizePlan& plan) {
  std::map<std::string, TensorDecision> by_name;
  for (const auto& decision : plan.decisions) by_name[decision.tensor] = decision;
  return by_name;
}

TEST(LayerSelector, ReadsRangesAndRelativeTerms) {
  ModelLayout layout{.num_hidden_layers = 78, .first_k_dense_replace = 3};
  auto selector = LayerSelector::parse("first 2, last 2, 40-41, mtp");
  for (std::uint32_t layer : {0u, 1u, 40u, 41u, 76u, 77u, 78u})
    EXPECT_TRUE(selector.matches(layer, layout)) << layer;
  for (std::uint32_t layer : {2u, 39u, 42u, 75u}) EXPECT_FALSE(selector.matches(layer, layout));
  EXPECT_FALSE(LayerSelector::parse("last 2").matches(78, layout));  // MTP is not a main layer
  for (const char* bad : {"", "first", "3-", "5-3", "x", "first -1"})
    EXPECT_EQ(error_kind_of([&] { LayerSelector::parse(bad); }), "recipe.invalid_layers") << bad;
}

TEST(LayerSelector, CountsAndRangesNearTheIntegerLimitsNeitherWrapNorOverflow) {
  ModelLayout layout{.num_hidden_layers = 78, .first_k_dense_replace = 3};
  // A count at least the layer count selects every main layer (and no MTP layer), however
  // large: "last 4294967295" once wrapped around and selected nothing.
  for (const char* every : {"last 78", "last 100", "last 4294967295", "first 78", "first 100",
                            "first 4294967295", "0-4294967295"}) {
    const auto selector = LayerSelector::parse(every);
    for (std::uint32_t layer : {0u, 1u, 40u, 77u})
      EXPECT_TRUE(selector.matches(layer, layout)) << every << " " << layer;
    if (std::string_view(every) != "0-4294967295")
      EXPECT_FALSE(selector.matches(78, layout)) << every;
  }
  EXPECT_TRUE(LayerSelector::parse("4294967295").matches(4294967295u, layout));
  EXPECT_FALSE(LayerSelector::parse("last 0").matches(77, layout));
  // Numbers beyond 32 bits, signs and garbage are errors naming the term, not wrapped values.
  for (const char* bad :
       {"last 4294967296", "first 99999999999999999999", "0-4294967296", "4294967296", "last +3",
        "last 3x", "3--5", "-3", "1,", "3 - x", "last", "firsts 2"}) {
    try {
      LayerSelector::parse(bad);
      ADD_FAILURE() << bad << ": no throw";
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), "recipe.invalid_layers") << bad;
      EXPECT_NE(error.detail().find(bad), std::string::npos) << error.detail();
    }
  }
}

TEST(Recipe, RejectsWhatItCannotRead) {
  const std::map<std::string, const char*> cases = {
      {"recipe.unknown_key", "rules: [{action: keep, colour: red}]"},
      {"recipe.unknown_key", "rulez: []"},
      {"recipe.unknown_category", "rules: [{category: attentionz, action: keep}]"},
      {"recipe.unknown_role", "rules: [{role: attn.qq, action: keep}]"},
      {"recipe.unknown_action", "rules: [{action: int3}]"},
      {"recipe.missing_action", "rules: [{category: norm}]"},
      {"recipe.no_rules", "description: nothing"},
      {"recipe.invalid_layers", "rules: [{layers: 'first', action: keep}]"},
      {"recipe.unknown_parameter", "rules: [{layers: 'first {n}', action: keep}]"},
      {"recipe.unknown_format", "format: gguf\nrules: [{action: keep}]"},
      {"recipe.invalid_yaml", "rules: [action: keep"},
      {"pattern.invalid_regex", "rules: [{module: 're:(', action: keep}]"},
  };
  for (const auto& [kind, text] : cases)
    EXPECT_EQ(error_kind_of([&] { parse_recipe(text, "test.yaml"); }), kind) << text;
  // Found by the recipe fuzzer: nodes of another type where a string belongs (a parameter's
  // value, a key) made yaml-cpp's BadConversion escape as an internal error.
  for (const char* text : {"parameters: {a: [1, 2]}\nrules: [{action: keep}]",
                           "parameters: {[a]: 1}\nrules: [{action: keep}]",
                           "{[a]: 1, rules: [{action: keep}]}"})
    EXPECT_EQ(error_kind_of([&] { parse_recipe(text, "test.yaml"); }), "recipe.invalid_yaml")
        << text;
  EXPECT_EQ(
      error_kind_of([&] {
        parse_recipe("parameters: {n: 2}\nrules: [{action: keep}]", "test.yaml", {{"m", "1"}});
      }),
      "recipe.unknown_parameter");
}

TEST(QuantizePlan, FirstMatchingRuleDecidesAndParametersApply) {
  auto source = Checkpoint::open(kModel);
  auto recipe = load_recipe(shipped_recipe("glm5-nvfp4-seed001.yaml"), {{"boundary_layers", "1"}});
  auto plan = plan_for(source, recipe);
  auto decisions = decisions_by_name(plan);
  // Routed experts of the middle layers (1, 2) are NVFP4; layer 3 is a boundary layer.
  EXPECT_EQ(decisions["model.layers.1.mlp.experts.5.up_proj.weight"].action, RecipeAction::Nvfp4);
  EXPECT_EQ(decisions["model.layers.2.mlp.experts.0.down_proj.weight"].action, RecipeAction::Nvfp4);
  EXPECT_EQ(decisions["model.layers.3.mlp.experts.0.down_proj.weight"].action, RecipeAction::Keep);
  EXPECT_EQ(decisions["model.layers.3.mlp.experts.0.down_proj.weight"].rule,
            "first and last layers stay BF16");
  EXPECT_EQ(decisions["model.layers.4.mlp.experts.0.gate_proj.weight"].action,
            RecipeAction::Keep);  // MTP
  EXPECT_EQ(decisions["model.layers.1.mlp.shared_experts.up_proj.weight"].action,
            RecipeAction::Keep);
  EXPECT_EQ(decisions["model.layers.0.self_attn.indexer.weights_proj.weight"].action,
            RecipeAction::CastF32);
  EXPECT_EQ(decisions["model.layers.1.mlp.gate.weight"].action, RecipeAction::Keep);
  EXPECT_EQ(decisions["model.layers.1.input_layernorm.weight"].action, RecipeAction::Keep);
  // 2 layers × 16 experts × 3 projections.
  EXPECT_EQ(plan.model.nvfp4_modules.size(), 96u);

  // With the default of 2 boundary layers, all 4 layers of the tiny model are kept.
  auto defaults = plan_for(source, load_recipe(shipped_recipe("glm5-nvfp4-seed001.yaml")));
  EXPECT_TRUE(defaults.model.nvfp4_modules.empty());
}

TEST(QuantizePlan, FusedMembersBecomeOneItemWithAllOutputs) {
  auto source = Checkpoint::open(kModel);
  auto plan = plan_for(source, parse_recipe("format: compressed-tensors\nrules: [{category: "
                                            "[attention, routed_expert], action: nvfp4}]",
                                            "test"));
  std::size_t fused_items = 0;
  for (const auto& item : plan.plan.items) {
    if (item.sources.size() != 2) continue;
    ++fused_items;
    EXPECT_EQ(item.outputs.size(), 6u);
    EXPECT_EQ(item.outputs[0].name.substr(item.outputs[0].name.rfind('.')), ".weight_packed");
    EXPECT_EQ(item.outputs[2].dtype, DType::F32);
    EXPECT_EQ(item.outputs[2].shape, Shape{1});
  }
  // q_a + kv_a in 5 layers, gate + up of 16 experts in 4 MoE layers.
  EXPECT_EQ(fused_items, 5u + 4u * 16u);
}

TEST(QuantizePlan, RefusesAFusedPairSplitAcrossSchemes) {
  auto source = Checkpoint::open(kModel);
  auto recipe = parse_recipe("rules: [{role: attn.q_a, action: nvfp4}]", "test");
  EXPECT_EQ(error_kind_of([&] { plan_for(source, recipe); }), "plan.fused_split");
  auto methods = parse_recipe(
      "rules: [{role: expert.gate, action: nvfp4, scale_method: mse}, {role: expert.up, action: "
      "nvfp4}]",
      "test");
  EXPECT_EQ(error_kind_of([&] { plan_for(source, methods); }), "plan.fused_split");
  // Float members may differ: indexer wk BF16 beside weights_proj F32.
  EXPECT_EQ(error_kind_of([&] {
              plan_for(source,
                       parse_recipe("rules: [{role: indexer.weights_proj, action: f32}]", "t"));
            }),
            "no error");
}

TEST(QuantizePlan, RefusesShapesThatDoNotDivideTheBlockAndNonFloatSources) {
  testing::ScratchDirectory scratch("plan-shapes");
  const auto model = scratch.path() / "model";
  std::filesystem::create_directories(model);
  write_file_atomically(model / "config.json", R"({"num_hidden_layers": 1})");
  {
    SafetensorsWriter writer(model / "model.safetensors",
                             {{"model.layers.0.mlp.down_proj.weight", DType::BF16, {4, 24}},
                              {"model.layers.0.mlp.up_proj.weight", DType::I8, {4, 32}}});
    std::vector<std::byte> zeros(4 * 24 * 2 + 4 * 32);
    writer.write(zeros);
    writer.commit();
  }
  auto source = Checkpoint::open(model);
  EXPECT_EQ(error_kind_of([&] {
              plan_for(source, parse_recipe("rules: [{role: dense.down, action: nvfp4}]", "t"));
            }),
            "plan.group_size");
  EXPECT_EQ(error_kind_of([&] {
              plan_for(source, parse_recipe("rules: [{role: dense.up, action: f32}]", "t"));
            }),
            "plan.uncastable_dtype");
}

TEST(QuantizationConfig, CompressedTensorsIgnoreCoversEveryKeptLinearInVllm) {
  auto source = Checkpoint::open(kModel);
  auto plan = plan_for(source, load_recipe(shipped_recipe("modelopt-nvfp4-experts-only.yaml")));
  // The check inside throws if vLLM would resolve any module differently.
  auto block = compressed_tensors_config_block(plan.model);
  const auto ignore = block["ignore"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(ignore.begin(), ignore.end(), "lm_head"), ignore.end());
  EXPECT_NE(std::find(ignore.begin(), ignore.end(),
                      "re:^model\\.layers\\.4\\.mlp\\.experts\\.\\d+\\.(gate|up|down)_proj$"),
            ignore.end());
  EXPECT_EQ(block["format"], "nvfp4-pack-quantized");
  EXPECT_EQ(block["quantization_status"], "compressed");

  auto modelopt = modelopt_hf_quant_config(plan.model);
  EXPECT_EQ(modelopt["quantization"]["quant_algo"], "W4A16_NVFP4");
  EXPECT_EQ(modelopt["quantization"]["group_size"], 16);
  const auto excluded = modelopt["quantization"]["exclude_modules"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(excluded.begin(), excluded.end(), "model.layers.4.mlp.experts.*"),
            excluded.end());
  EXPECT_NE(std::find(excluded.begin(), excluded.end(), "model.layers.2.self_attn.o_proj"),
            excluded.end());
}

TEST(QuantizationConfig, MisdescribedModelIsCaught) {
  QuantizedModel model;
  model.nvfp4_modules = {"model.layers.1.self_attn.q_a_proj"};
  // kv_a_proj_with_mqa is fused with q_a_proj in vLLM but listed as kept: vLLM would see a
  // half-ignored fused module.
  model.unquantized_linears = {"model.layers.1.self_attn.kv_a_proj_with_mqa"};
  EXPECT_EQ(error_kind_of([&] { compressed_tensors_config_block(model); }), "config.vllm_mismatch");
}

}  // namespace
}  // namespace qs
