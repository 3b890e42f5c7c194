// The seed checkpoints' batch recipes (recipes/batch-seed*.yaml) run end to end on the bundled
// model, as a user runs them: every step (quantize, calibrate, splice, mtp extract / inject,
// validate, eval) exits 0, and the results have the layout their model cards describe.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;

const std::filesystem::path kRecipes = std::filesystem::path(QS_SOURCE_DIR) / "recipes";
const std::filesystem::path kModel = testing::bundled_model();

// Runs the batch recipe with the bundled model and `work`; returns its config.json at `result`.
nlohmann::json run_seed(const std::string& recipe, const std::filesystem::path& work,
                        const std::string& result) {
  auto run = run_cli("recipe run " + quoted(kRecipes / recipe) +
                     " --param model=" + quoted(kModel) + " --param work=" + quoted(work));
  EXPECT_EQ(run.exit_code, 0) << run.output;
  return nlohmann::json::parse(read_text_file(work / result / "config.json"));
}

std::set<std::string> group_formats(const nlohmann::json& config) {
  std::set<std::string> formats;
  for (const auto& [name, group] : config["quantization_config"]["config_groups"].items())
    formats.insert(group["format"].get<std::string>());
  return formats;
}

TEST(SeedRecipes, Seed000SplicesW8A16AndNvfp4Experts) {
  ScratchDirectory scratch("seed000");
  const auto config = run_seed("batch-seed000-hybrid.yaml", scratch.path(), "hybrid");
  EXPECT_EQ(config["quantization_config"]["format"], "mixed-precision");
  EXPECT_EQ(group_formats(config),
            (std::set<std::string>{"nvfp4-pack-quantized", "pack-quantized"}));
  auto hybrid = Checkpoint::open(scratch.path() / "hybrid");
  EXPECT_EQ(hybrid.at("model.layers.2.mlp.experts.0.up_proj.weight_packed").info->dtype, DType::U8);
  EXPECT_EQ(hybrid.at("model.layers.2.self_attn.o_proj.weight_packed").info->dtype, DType::I32);
  EXPECT_EQ(hybrid.at("model.layers.4.mlp.experts.0.up_proj.weight_packed").info->dtype,
            DType::I32);  // the MTP block stays W8A16
}

TEST(SeedRecipes, Seed002KeepsTheBf16MtpLayerIgnored) {
  ScratchDirectory scratch("seed002");
  const auto config = run_seed("batch-seed002-mtp.yaml", scratch.path(), "w4a16-mtp");
  EXPECT_EQ(group_formats(config), (std::set<std::string>{"pack-quantized"}));
  auto output = Checkpoint::open(scratch.path() / "w4a16-mtp");
  auto source = Checkpoint::open(kModel);
  const std::string mtp = "model.layers.4.mlp.experts.3.gate_proj.weight";
  EXPECT_EQ(output.at(mtp).shard->read(*output.at(mtp).info),
            source.at(mtp).shard->read(*source.at(mtp).info));
  EXPECT_NE(config["quantization_config"]["ignore"].dump().find("model.layers.4."),
            std::string::npos);
}

TEST(SeedRecipes, Seed003WritesAnInt4Group32Draft) {
  ScratchDirectory scratch("seed003");
  const auto config = run_seed("batch-seed003-mtp-int4-draft.yaml", scratch.path(), "draft");
  const auto& weights = config["quantization_config"]["config_groups"]["group_0"]["weights"];
  EXPECT_EQ(weights["num_bits"], 4);
  EXPECT_EQ(weights["group_size"], 32);
  EXPECT_EQ(weights["symmetric"], false);
  auto draft = Checkpoint::open(scratch.path() / "draft");
  for (const auto& location : draft.tensors())
    EXPECT_TRUE(location.info->name.starts_with("model.layers.4.")) << location.info->name;
}

TEST(SeedRecipes, Seed004WritesMixedVqExpertsAndAnInt4Spine) {
  ScratchDirectory scratch("seed004");
  const auto config = run_seed("batch-seed004-vq.yaml", scratch.path(), "vq");
  const auto& quantization = config["quantization_config"];
  EXPECT_EQ(group_formats(config), (std::set<std::string>{"pack-quantized"}));  // the spine
  std::set<std::string> tiers;
  for (const auto& [module, entry] : quantization["vq"]["modules"].items()) {
    EXPECT_NE(module.find(".mlp.experts."), std::string::npos) << module;
    EXPECT_EQ(module.find("model.layers.4."), std::string::npos) << module;  // MTP stays BF16
    tiers.insert(entry["tier"].get<std::string>());
  }
  EXPECT_EQ(quantization["vq"]["modules"].size(), 3u * 16u * 3u);  // layers 1-3, 16 experts
  EXPECT_GE(tiers.size(), 2u);
  for (const auto& tier : tiers) EXPECT_TRUE(tier == "vq1" || tier == "vq2" || tier == "vq3");
  auto output = Checkpoint::open(scratch.path() / "vq");
  auto source = Checkpoint::open(kModel);
  const std::string mtp = "model.layers.4.mlp.experts.3.gate_proj.weight";
  EXPECT_EQ(output.at(mtp).shard->read(*output.at(mtp).info),
            source.at(mtp).shard->read(*source.at(mtp).info));
  EXPECT_EQ(output.at("model.layers.1.self_attn.o_proj.weight_packed").info->dtype, DType::I32);
}

}  // namespace
}  // namespace qs
