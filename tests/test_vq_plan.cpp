// The VQ recipe vocabulary and the planner's hooks (docs/formats/vq.md): `vq` rules parse with
// their tiers and options, vq_candidates lists what a vq rule decides with gate/up tied, and
// plan_quantization turns an assignment into items (fused pairs together, one item per
// codebook) and a config that declares every VQ module.

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/formats/vq_declaration.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/safetensors.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/ckpt/plan/recipe.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::error_kind_of;

const std::filesystem::path kModel = testing::bundled_model();

constexpr const char* kUniformVq2 = R"(format: compressed-tensors
rules:
  - name: routed experts
    category: routed_expert
    action: vq
    tiers: [vq2]
    compensation: none
)";

Recipe recipe_of(const std::string& text, const std::map<std::string, std::string>& params = {}) {
  return parse_recipe(text, "test.yaml", params);
}

std::string recipe_error(const std::string& text) {
  return error_kind_of([&] { recipe_of(text); });
}

// Every candidate gets the first tier of its menu; codebooks per scope and tier, filled with
// a recognisable ramp so the codebook items can be checked value by value.
VqAssignment assign_first_tier(const std::vector<VqCandidate>& candidates) {
  VqAssignment assignment;
  for (const auto& candidate : candidates) {
    const VqTier tier = candidate.options.tiers.front();
    const auto name = vq_codebook_tensor(tier, candidate.options.codebooks, candidate.layer);
    assignment.tier_of[candidate.module] = tier;
    assignment.codebook_of[candidate.module] = name;
    auto& codebook = assignment.codebooks[name];
    codebook.tier = tier;
    codebook.dtype = DType::F16;
    codebook.codewords.resize(static_cast<std::size_t>(tier.k) * tier.d);
    for (std::size_t i = 0; i < codebook.codewords.size(); ++i)
      codebook.codewords[i] = static_cast<float>(i % 64) / 32.0f - 1.0f;
  }
  return assignment;
}

QuantizePlan plan_with(const Checkpoint& source, const Recipe& recipe, const VqAssignment* vq,
                       std::vector<QuantizeRequest>* requests = nullptr) {
  return plan_quantization(
      source, recipe,
      [&](const QuantizeRequest& request) {
        if (requests) requests->push_back(request);
        return make_copy_transform();
      },
      nullptr, vq);
}

TEST(VqRecipe, ReadsTiersOptionsAndCustomTiers) {
  const auto recipe = recipe_of(R"(format: compressed-tensors
parameters: {target_bpw: "1.9"}
vq_tiers:
  vq2wide: {d: 8, k: 65536}
rules:
  - name: experts
    category: routed_expert
    action: vq
    tiers: [vq1, vq2, vq3, vq2wide]
    target_bpw: "{target_bpw}"
    codebooks: layer
    compensation: gptq
    metric: euclidean
    update: diagonal
    refine: 2
    refit_scales: true
    gain_correction: false
    allocation_estimate: plain
    allocation_routing: false
    allocation_output_space: false
    damp: 0.05
    act_order: false
    blend_tokens: 64
    min_tokens: 3
)",
                                {{"target_bpw", "2.2"}});
  ASSERT_EQ(recipe.rules.size(), 1u);
  const auto& rule = recipe.rules[0];
  EXPECT_EQ(rule.action, RecipeAction::Vq);
  ASSERT_EQ(rule.vq.tiers.size(), 4u);
  EXPECT_EQ(rule.vq.tiers[0], *preset_vq_tier("vq1"));
  EXPECT_EQ(rule.vq.tiers[3].name, "vq2wide");
  EXPECT_EQ(rule.vq.tiers[3].d, 8u);
  EXPECT_EQ(rule.vq.tiers[3].k, 65536u);
  EXPECT_EQ(rule.vq.target_bpw, 2.2);
  EXPECT_EQ(rule.vq.codebooks, VqCodebookScope::Layer);
  EXPECT_EQ(rule.vq.metric, VqMetricChoice::Euclidean);
  EXPECT_EQ(rule.vq.update, VqUpdateChoice::Diagonal);
  EXPECT_EQ(rule.vq.refine, 2u);
  EXPECT_TRUE(rule.vq.refit_scales);
  EXPECT_FALSE(rule.vq.gain_correction);
  EXPECT_EQ(rule.vq.allocation_estimate, VqAllocationEstimate::Plain);
  EXPECT_FALSE(rule.vq.allocation_routing);
  EXPECT_FALSE(rule.vq.allocation_output_space);
  EXPECT_EQ(rule.integer.damp, 0.05);
  EXPECT_FALSE(rule.integer.act_order);
  EXPECT_EQ(rule.integer.blend_tokens, 64u);
  EXPECT_EQ(rule.integer.min_tokens, 3u);
  EXPECT_EQ(recipe.vq_tiers.at("vq2wide").d, 8u);
  EXPECT_EQ(rule.vq.label(), "vq1|vq2|vq3|vq2wide@2.2");
  EXPECT_TRUE(needs_statistics(rule.vq));
  EXPECT_TRUE(needs_calibration_statistics(recipe));

  // One tier without compensation reads no statistics; target_bpw beside one tier is ignored.
  const auto uniform = recipe_of(std::string(kUniformVq2) + "    target_bpw: 0.5\n");
  EXPECT_FALSE(needs_statistics(uniform.rules[0].vq));
  EXPECT_FALSE(needs_calibration_statistics(uniform));
  EXPECT_EQ(uniform.rules[0].vq.pinned(), preset_vq_tier("vq2"));
  // Defaults: model codebooks, GPTQ, Mahalanobis, exact update.
  const auto defaults = recipe_of("rules: [{action: vq, tiers: vq3}]");
  EXPECT_EQ(defaults.rules[0].vq.codebooks, VqCodebookScope::Model);
  EXPECT_EQ(defaults.rules[0].vq.compensation, VqCompensation::Gptq);
  EXPECT_EQ(defaults.rules[0].vq.metric, VqMetricChoice::Mahalanobis);
  EXPECT_EQ(defaults.rules[0].vq.update, VqUpdateChoice::Exact);
  EXPECT_TRUE(needs_statistics(defaults.rules[0].vq));
}

TEST(VqRecipe, RefusesWhatItCannotUseNamingFileAndRule) {
  EXPECT_EQ(recipe_error("rules: [{action: vq, tiers: [vq7]}]"), "recipe.vq_tier");
  EXPECT_EQ(recipe_error("rules: [{action: vq}]"), "recipe.vq_tier");
  EXPECT_EQ(recipe_error("rules: [{action: vq, tiers: [vq2, vq2], target_bpw: 2}]"),
            "recipe.vq_tier");
  EXPECT_EQ(recipe_error("vq_tiers: {odd: {d: 3, k: 256}}\nrules: [{action: vq, tiers: odd}]"),
            "recipe.vq_tier");
  EXPECT_EQ(recipe_error("vq_tiers: {vq2: {d: 4, k: 16}}\nrules: [{action: vq, tiers: vq2}]"),
            "recipe.vq_tier");
  EXPECT_EQ(recipe_error("vq_tiers: {u: {d: 4, k: 16, codebook: uniform}}\nrules: [{action: "
                         "keep}]"),
            "recipe.vq_tier");
  EXPECT_EQ(recipe_error("vq_tiers: {w: {d: 4}}\nrules: [{action: keep}]"), "recipe.vq_tier");
  EXPECT_EQ(recipe_error("rules: [{action: vq, tiers: [vq1, vq3]}]"), "recipe.vq_target_bpw");
  EXPECT_EQ(recipe_error("rules: [{action: vq, tiers: [vq1, vq3], target_bpw: 1.0}]"),
            "vq.budget");
  EXPECT_EQ(recipe_error("rules: [{action: vq, tiers: vq2, codebooks: expert}]"),
            "recipe.invalid");
  EXPECT_EQ(recipe_error("rules: [{action: vq, tiers: vq2, metric: manhattan}]"),
            "recipe.invalid");
  EXPECT_EQ(recipe_error("rules: [{action: int4, tiers: vq2}]"), "recipe.invalid");
  EXPECT_EQ(recipe_error("rules: [{action: vq, tiers: vq2, report_rtn: false}]"),
            "recipe.invalid");
  EXPECT_EQ(recipe_error("rules: [{action: vq, tiers: vq2, bits: 4}]"), "recipe.invalid");
  try {
    recipe_of("rules: [{name: experts, action: vq, tiers: [vq9]}]");
    FAIL() << "no throw";
  } catch (const Error& error) {
    EXPECT_EQ(error.file(), "test.yaml");
    EXPECT_NE(error.detail().find("'experts'"), std::string::npos) << error.detail();
    EXPECT_NE(error.detail().find("vq9"), std::string::npos) << error.detail();
  }
}

TEST(VqCandidates, ListsEveryDecidedLinearWithGateAndUpTied) {
  const auto source = Checkpoint::open(kModel);
  const auto recipe = recipe_of(R"(format: compressed-tensors
rules:
  - name: down
    category: routed_expert
    module: "*.down_proj"
    action: vq
    tiers: [vq1, vq2, vq3]
    target_bpw: 2
    codebooks: layer
  - name: gate and up
    category: routed_expert
    action: vq
    tiers: [vq2]
)");
  const auto candidates = vq_candidates(source, recipe);
  ASSERT_FALSE(candidates.empty());
  // glm5-tiny: 16 experts × 3 projections in each MoE layer (and the MTP layer).
  std::set<std::uint32_t> layers;
  std::map<std::string, std::vector<std::string>> tied;
  for (const auto& candidate : candidates) {
    ASSERT_TRUE(candidate.layer && candidate.expert) << candidate.module;
    layers.insert(*candidate.layer);
    tied[candidate.tie].push_back(candidate.module);
    EXPECT_EQ(candidate.tensor, candidate.module + ".weight");
    EXPECT_EQ(candidate.dtype, DType::BF16);
    const bool down = candidate.module.ends_with(".down_proj");
    EXPECT_EQ(candidate.rule, down ? "down" : "gate and up");
    EXPECT_EQ(candidate.rule_index, down ? 0u : 1u);
    EXPECT_EQ(candidate.rows, down ? 256u : 128u);
    EXPECT_EQ(candidate.cols, down ? 128u : 256u);
    EXPECT_EQ(candidate.pinned.has_value(), !down);
    if (!down) {
      EXPECT_EQ(candidate.pinned->name, "vq2");
    }
    EXPECT_EQ(candidate.options.codebooks, down ? VqCodebookScope::Layer : VqCodebookScope::Model);
  }
  EXPECT_EQ(candidates.size(), layers.size() * 16 * 3);
  for (const auto& [tie, modules] : tied) {
    if (modules.front().ends_with(".down_proj")) {
      EXPECT_EQ(modules, std::vector<std::string>{tie});
    } else {
      ASSERT_EQ(modules.size(), 2u) << tie;
      EXPECT_TRUE(modules[0].ends_with(".gate_proj") || modules[1].ends_with(".gate_proj"));
      EXPECT_TRUE(tie.ends_with(".gate_up_proj")) << tie;
    }
  }
}

TEST(VqPlan, TiersFromTheAssignmentFusedPairsTogetherAndOneItemPerCodebook) {
  const auto source = Checkpoint::open(kModel);
  const auto recipe = recipe_of(R"(format: compressed-tensors
rules:
  - name: down
    module: "*.down_proj"
    category: routed_expert
    action: vq
    tiers: [vq3]
    compensation: none
    codebooks: layer
  - name: gate up
    category: routed_expert
    action: vq
    tiers: [vq1]
    compensation: none
  - name: attention
    category: attention
    action: int4
)");
  const auto candidates = vq_candidates(source, recipe);
  const auto assignment = assign_first_tier(candidates);
  std::vector<QuantizeRequest> requests;
  const auto planned = plan_with(source, recipe, &assignment, &requests);

  std::size_t vq_requests = 0;
  for (const auto& request : requests) {
    if (request.action != RecipeAction::Vq) continue;
    ++vq_requests;
    ASSERT_TRUE(request.vq_tier);
    ASSERT_NE(request.vq_codebook, nullptr);
    EXPECT_EQ(request.vq_codebook->tier, *request.vq_tier);
    EXPECT_EQ(request.member_count, request.vq_tier->name == "vq1" ? 2u : 1u);
    EXPECT_EQ(request.vq.compensation, VqCompensation::None);
  }
  // One request per expert's gate+up pair and one per down_proj.
  EXPECT_EQ(vq_requests, candidates.size() / 3 * 2);

  std::map<std::string, const PlanItem*> item_of;
  for (const auto& item : planned.plan.items)
    for (const auto& output : item.outputs) item_of[output.name] = &item;
  const std::string gate = "model.layers.1.mlp.experts.5.gate_proj";
  const std::string down = "model.layers.1.mlp.experts.5.down_proj";
  ASSERT_TRUE(item_of.contains(gate + ".vq_codes"));
  const PlanItem& pair = *item_of.at(gate + ".vq_codes");
  EXPECT_EQ(pair.scheme, "vq/vq1");
  ASSERT_EQ(pair.outputs.size(), 4u);
  // vq1: d 8, 8-bit indices → 256 inputs are 32 codes, 8 words; scales one per 128 inputs.
  EXPECT_EQ(pair.outputs[0].shape, (Shape{128, 8}));
  EXPECT_EQ(pair.outputs[0].dtype, DType::I32);
  EXPECT_EQ(pair.outputs[1].name, gate + ".vq_scales");
  EXPECT_EQ(pair.outputs[1].shape, (Shape{128, 2}));
  EXPECT_EQ(pair.outputs[1].dtype, DType::BF16);
  EXPECT_EQ(pair.outputs[2].name, "model.layers.1.mlp.experts.5.up_proj.vq_codes");
  // vq3: d 4, 12-bit indices → 128 inputs are 32 codes, 384 bits, 12 words.
  EXPECT_EQ(item_of.at(down + ".vq_codes")->outputs[0].shape, (Shape{256, 12}));
  EXPECT_EQ(item_of.at(down + ".vq_codes")->scheme, "vq/vq3");

  // One codebook item per codebook tensor, no sources, its values in F16.
  std::set<std::string> codebooks;
  for (const auto& [name, codebook] : assignment.codebooks) codebooks.insert(name);
  EXPECT_TRUE(codebooks.contains("vq_codebooks.vq1"));
  EXPECT_TRUE(codebooks.contains("model.layers.1.mlp.experts.vq_codebooks.vq3"));
  for (const auto& name : codebooks) {
    ASSERT_TRUE(item_of.contains(name)) << name;
    const PlanItem& item = *item_of.at(name);
    EXPECT_TRUE(item.sources.empty());
    ASSERT_EQ(item.outputs.size(), 1u);
    const auto& codebook = assignment.codebooks.at(name);
    EXPECT_EQ(item.outputs[0].shape, (Shape{codebook.tier.k, codebook.tier.d}));
    EXPECT_EQ(item.outputs[0].dtype, DType::F16);
    std::vector<std::byte> bytes(item.outputs[0].byte_size());
    std::vector<std::span<std::byte>> outputs{bytes};
    item.transform->run({}, outputs);
    std::vector<float> values(codebook.codewords.size());
    decode_to_f32(DType::F16, bytes, values);
    EXPECT_EQ(values, codebook.codewords) << name;
  }

  // The config declares each VQ module (ignored by compressed-tensors) beside the int4 group.
  EXPECT_EQ(planned.model.vq_modules.size(), candidates.size());
  const auto block = compressed_tensors_config_block(planned.model);
  EXPECT_EQ(block["vq"]["tiers"]["vq1"],
            (nlohmann::json{{"d", 8}, {"k", 256}, {"index_bits", 8}, {"codebook", "learned"}}));
  EXPECT_EQ(block["vq"]["modules"][down],
            (nlohmann::json{{"tier", "vq3"},
                            {"codebook", "model.layers.1.mlp.experts.vq_codebooks.vq3"}}));
  EXPECT_EQ(block["extra_config"][gate], (nlohmann::json{{"bits", 1}, {"format", "vq"}, {"d", 8}}));
  EXPECT_EQ(block["extra_config"][down], (nlohmann::json{{"bits", 3}, {"format", "vq"}, {"d", 4}}));
  EXPECT_EQ(block["format"], "pack-quantized");
  const auto ignore = block["ignore"].dump();
  EXPECT_NE(ignore.find("experts"), std::string::npos) << ignore;
  // ... and reads back as the same declaration.
  const auto declaration =
      VqDeclaration::from_config({{"quantization_config", block}}, "config.json");
  EXPECT_EQ(declaration.modules().size(), candidates.size());
  EXPECT_EQ(declaration.tier_of(down)->name, "vq3");
  EXPECT_EQ(declaration.module(gate)->codebook, "vq_codebooks.vq1");
}

TEST(VqPlan, OnlyVqModulesGiveABlockWithoutGroups) {
  QuantizedModel model;
  model.vq_modules = {{"model.layers.1.mlp.experts.0.gate_proj", *preset_vq_tier("vq1.5"),
                       "vq_codebooks.vq1.5"}};
  model.unquantized_linears = {"model.layers.1.self_attn.o_proj"};
  const auto block = compressed_tensors_config_block(model);
  EXPECT_TRUE(block["config_groups"].empty());
  EXPECT_EQ(block["format"], "dense");
  EXPECT_EQ(block["extra_config"]["model.layers.1.mlp.experts.0.gate_proj"]["bits"], 1.5);
  EXPECT_EQ(block["vq"]["tiers"]["vq1.5"]["index_bits"], 12);
}

TEST(VqPlan, RefusesBeforeAnythingIsWritten) {
  const auto source = Checkpoint::open(kModel);
  // Compensation (the default) needs statistics at plan time, which --calib-tokens lacks.
  const auto compensated = recipe_of("format: compressed-tensors\nrules: [{name: e, category: "
                                     "routed_expert, action: vq, tiers: vq2}]");
  try {
    plan_with(source, compensated, nullptr);
    FAIL() << "no throw";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "plan.vq_needs_statistics");
    EXPECT_NE(error.detail().find("--calib-tokens"), std::string::npos) << error.detail();
    EXPECT_NE(error.detail().find("--calib STATS"), std::string::npos) << error.detail();
  }
  // No assignment for a decided module: the caller's bug.
  const auto uniform = recipe_of(kUniformVq2);
  try {
    plan_with(source, uniform, nullptr);
    FAIL() << "no throw";
  } catch (const Error& error) {
    EXPECT_EQ(error.error_class(), ErrorClass::Internal);
    EXPECT_EQ(error.kind(), "plan.vq_unassigned");
  }
  // modelopt cannot declare VQ modules.
  EXPECT_EQ(error_kind_of([&] {
              vq_candidates(source, recipe_of("rules: [{category: routed_expert, action: vq, "
                                              "tiers: vq2, compensation: none}]"));
            }),
            "plan.unsupported_format");
  // Inputs not a multiple of 128 have no whole scale groups.
  testing::ScratchDirectory scratch("vq-plan-shape");
  {
    const std::string name = "model.layers.0.mlp.experts.0.down_proj.weight";
    SafetensorsWriter writer(scratch.path() / "model.safetensors",
                             {{name, DType::BF16, {8, 192}}});
    writer.write_tensor(name, std::vector<std::byte>(8 * 192 * 2));
    writer.commit();
    std::ofstream(scratch.path() / "config.json")
        << R"({"model_type": "glm_moe_dsa", "num_hidden_layers": 1, "n_routed_experts": 1})";
  }
  const auto narrow = Checkpoint::open(scratch.path());
  try {
    vq_candidates(narrow, uniform);
    FAIL() << "no throw";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "plan.vq_shape");
    EXPECT_EQ(error.tensor(), "model.layers.0.mlp.experts.0.down_proj.weight");
  }
  const auto candidates = vq_candidates(source, uniform);
  EXPECT_FALSE(candidates.empty());
  // gate and up assigned different tiers are a split fused pair.
  auto assignment = assign_first_tier(candidates);
  const std::string up = "model.layers.1.mlp.experts.0.up_proj";
  assignment.tier_of[up] = *preset_vq_tier("vq3");
  EXPECT_EQ(error_kind_of([&] { plan_with(source, uniform, &assignment); }), "plan.fused_split");
}

}  // namespace
}  // namespace qs
