// Calibrated NVFP4 through `quantsmith quantize` as users run it: GPTQ on the NVFP4 grid and the
// hessian scale method from `quantsmith calibrate` statistics, in both layouts, validated, with
// GPTQ's layer objective below the uncalibrated quantizer's; both refused without statistics
// before anything is written.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gptq_quality_report.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;
using testing::shipped_recipe;

const std::filesystem::path kModel = testing::bundled_model();

TEST(CalibratedNvfp4Cli, GptqAndHessianScalesFromStatistics) {
  ScratchDirectory scratch("quantize-nvfp4-calibrated");
  const std::string gptq =
      " --recipe " + quoted(shipped_recipe("modelopt-nvfp4-gptq-experts-only.yaml"));
  const std::string hessian = " --recipe " +
                              quoted(shipped_recipe("modelopt-nvfp4-experts-only.yaml")) +
                              " --scale-method hessian";
  for (const auto& arguments : {gptq, hessian}) {
    auto refused =
        run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "x") + arguments);
    EXPECT_EQ(refused.exit_code, 2) << refused.output;
    EXPECT_NE(refused.output.find("needs calibration statistics"), std::string::npos)
        << refused.output;
    EXPECT_FALSE(std::filesystem::exists(scratch.path() / "x" / "config.json"));
  }

  const auto stats = scratch.path() / "stats.qs";
  auto calibrated =
      run_cli("calibrate " + quoted(kModel) + " --tokens " + quoted(kModel / "tokens.safetensors") +
              ":calib --max-rows 16 " + "--all-experts --out " + quoted(stats));
  ASSERT_EQ(calibrated.exit_code, 0) << calibrated.output;
  const std::string calib = " --calib " + quoted(stats) + " --json";
  // The rule's GPTQ options reach the transform.
  auto planned = run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "x") + gptq +
                         calib + " --dry-run --param damp=0.02 --param act_order=false " +
                         "--param scale_method=hessian");
  ASSERT_EQ(planned.exit_code, 0) << planned.output;
  EXPECT_NE(planned.standard_output.find("nvfp4-gptq(hessian, damp 0.02, no act-order, blend 512 tokens, modelopt)"),
            std::string::npos)
      << planned.standard_output;
  for (const char* format : {"modelopt", "compressed-tensors"}) {
    const auto out = scratch.path() / (std::string("gptq-") + format);
    auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(out) + gptq + calib +
                          " --format " + format);
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const auto report = nlohmann::json::parse(result.standard_output);
    const auto losses = testing::checked_gptq_losses(report);
    // The routed experts of layers 1-3 (the MTP layer stays BF16).
    EXPECT_EQ(losses.weights, 4 * 16 * 3 - 16 * 3);
    EXPECT_LT(losses.gptq, 0.7 * losses.rtn);
    auto validate = run_cli("validate " + quoted(out) + " --ref " + quoted(kModel));
    EXPECT_EQ(validate.exit_code, 0) << validate.output;
  }
  const auto out = scratch.path() / "hessian";
  auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(out) + hessian + calib);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto validate = run_cli("validate " + quoted(out) + " --ref " + quoted(kModel));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
}

}  // namespace
}  // namespace qs
