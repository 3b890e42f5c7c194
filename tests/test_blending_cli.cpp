// calibrate (routed) → quantize GPTQ: experts' gate/up below blend_tokens are blended with their
// layer's pooled statistics, counted in the report; blend_tokens 0 keeps GPTQ on the expert's own
// tokens.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "qs/ckpt/plan/calibration_store.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::quoted;
using testing::run_cli;

const std::filesystem::path kModel = testing::bundled_model();
const std::filesystem::path kSeed002 = testing::shipped_recipe("glm5-w4a16-experts-seed002.yaml");

// The seed 002 recipe with `blend_tokens` set on its GPTQ rule.
std::filesystem::path recipe_with_blend(const std::filesystem::path& directory, int tokens) {
  std::ifstream in(kSeed002);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  const std::string action = "    action: \"{experts}\"\n";
  text.replace(text.find(action), action.size(),
               action + fmt::format("    blend_tokens: {}\n", tokens));
  const auto path = directory / fmt::format("blend{}.yaml", tokens);
  std::ofstream(path) << text;
  return path;
}

TEST(BlendingCli, ExpertsBelowTheThresholdAreBlendedAndCounted) {
  testing::ScratchDirectory scratch("blending-cli");
  const auto stats = scratch.path() / "routed.qs";
  // One 256-token row: every expert of the bundled model gets 26..109 tokens.
  const auto calibrated = run_cli("calibrate " + quoted(kModel) + " --tokens " +
                                  quoted(kModel / "tokens.safetensors") +
                                  ":calib --max-rows 1 --out " + quoted(stats));
  ASSERT_EQ(calibrated.exit_code, 0) << calibrated.output;
  const auto store = CalibrationStore::open(stats);
  for (const int threshold : {64, 0}) {
    const auto out = scratch.path() / fmt::format("gptq{}", threshold);
    const auto result =
        run_cli("quantize " + quoted(kModel) + " " + quoted(out) + " --recipe " +
                quoted(recipe_with_blend(scratch.path(), threshold)) + " --calib " +
                quoted(stats) + " --json");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const auto report = nlohmann::json::parse(result.standard_output);
    std::size_t blended = 0, expected = 0;
    for (const auto& row : report["quality"]) {
      const auto tensor = row["tensor"].get<std::string>();
      const auto module = tensor.substr(0, tensor.rfind('.'));
      EXPECT_TRUE(row["fallback"].is_null()) << tensor;
      EXPECT_LE(row["gptq_relative_loss"].get<double>(), row["rtn_relative_loss"].get<double>())
          << tensor;
      blended += row["blended"].get<bool>();
      // gate_proj and up_proj only (the pool of 1024 rows is wider than their 256 inputs).
      expected += module.ends_with("_proj") && !module.ends_with("down_proj") &&
                  store.find(module)->tokens < static_cast<std::uint64_t>(threshold);
    }
    EXPECT_EQ(blended, expected) << threshold;
    if (threshold > 0) EXPECT_GT(blended, 0u);
  }
}

}  // namespace
}  // namespace qs
