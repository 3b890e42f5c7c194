// `validate` on NVFP4 checkpoints: our own output validates clean in both layouts (also
// against its BF16 source), and each way of breaking one gives its own finding and exit 1.

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <optional>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/io/safetensors.h"
#include "quantized_outputs.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::QuantizedOutputs;
using testing::quoted;
using testing::run_cli;

const std::filesystem::path kModel = testing::bundled_model();

using testing::EditableTensor;
using testing::shipped_recipe;
using Edit = testing::TensorEdit;

class ValidateNvfp4 : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    outputs_.quantize("quantized", "--recipe " + quoted(shipped_recipe("glm5-nvfp4-seed001.yaml")) +
                                       " --param boundary_layers=1 --format " + GetParam());
    quantized_ = outputs_.path("quantized");
  }
  bool modelopt() const { return std::string(GetParam()) == "modelopt"; }
  std::string global_name(const std::string& module) const {
    return module + (modelopt() ? ".weight_scale_2" : ".weight_global_scale");
  }
  // Breaks a copy with `edit`, validates it against the source, expects `kind` and exit 1.
  void expect_finding(const Edit& edit, const std::string& kind) {
    const auto broken = outputs_.broken_copy("quantized", edit);
    auto result = run_cli("validate " + quoted(broken) + " --ref " + quoted(kModel));
    EXPECT_EQ(result.exit_code, 1) << kind << "\n" << result.output;
    EXPECT_NE(result.output.find(kind), std::string::npos) << kind << "\n" << result.output;
  }

  QuantizedOutputs outputs_{"validate-nvfp4"};
  std::filesystem::path quantized_;
};

const std::string kExpert = "model.layers.1.mlp.experts.3";

TEST_P(ValidateNvfp4, OwnOutputIsValidAndCloseToTheSource) {
  auto result = run_cli("validate " + quoted(quantized_) + " --ref " + quoted(kModel));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("nvfp4, reference"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("96 quantized weights"), std::string::npos) << result.output;
}

TEST_P(ValidateNvfp4, MissingBlockScales) {
  expect_finding(
      [](EditableTensor& tensor) { return tensor.spec.name != kExpert + ".up_proj.weight_scale"; },
      "nvfp4.missing_tensor");
}

TEST_P(ValidateNvfp4, WrongScaleDtypeAndShape) {
  expect_finding(
      [](EditableTensor& tensor) {
        if (tensor.spec.name == kExpert + ".up_proj.weight_scale") tensor.spec.dtype = DType::U8;
        return true;
      },
      "nvfp4.dtype_mismatch");
  expect_finding(
      [](EditableTensor& tensor) {
        if (tensor.spec.name == kExpert + ".down_proj.weight_scale") {
          tensor.spec.shape = {tensor.spec.shape[0] / 2, tensor.spec.shape[1] * 2};
        }
        return true;
      },
      "nvfp4.shape_mismatch");
}

TEST_P(ValidateNvfp4, NanBlockScaleAndNonPositiveGlobalScale) {
  expect_finding(
      [](EditableTensor& tensor) {
        if (tensor.spec.name == kExpert + ".up_proj.weight_scale")
          tensor.bytes[5] = std::byte{0x7F};
        return true;
      },
      "nvfp4.bad_block_scale");
  expect_finding(
      [this](EditableTensor& tensor) {
        if (tensor.spec.name == global_name(kExpert + ".down_proj")) {
          const float zero = 0.0f;
          std::memcpy(tensor.bytes.data(), &zero, 4);
        }
        return true;
      },
      "nvfp4.bad_global_scale");
}

TEST_P(ValidateNvfp4, FusedGateAndUpWithDifferentGlobalScales) {
  expect_finding(
      [this](EditableTensor& tensor) {
        if (tensor.spec.name == global_name(kExpert + ".gate_proj")) {
          float value = 0.0f;
          std::memcpy(&value, tensor.bytes.data(), 4);
          value *= 1.5f;
          std::memcpy(tensor.bytes.data(), &value, 4);
        }
        return true;
      },
      "nvfp4.fused_scale_mismatch");
}

TEST_P(ValidateNvfp4, ScrambledCodesAndAlteredKeptTensors) {
  expect_finding(
      [](EditableTensor& tensor) {
        const bool codes = tensor.spec.name == kExpert + ".down_proj.weight" ||
                           tensor.spec.name == kExpert + ".down_proj.weight_packed";
        if (codes)
          for (auto& byte : tensor.bytes) byte = std::byte{0x77};  // every element +6
        return true;
      },
      "reference.error_too_large");
  expect_finding(
      [](EditableTensor& tensor) {
        if (tensor.spec.name == "model.layers.0.self_attn.o_proj.weight")
          tensor.bytes[0] ^= std::byte{0x01};
        return true;
      },
      "reference.mismatch");
}

INSTANTIATE_TEST_SUITE_P(Layouts, ValidateNvfp4,
                         ::testing::Values("modelopt", "compressed-tensors"), [](const auto& info) {
                           return std::string(info.param) == "modelopt" ? "Modelopt"
                                                                        : "CompressedTensors";
                         });

}  // namespace
}  // namespace qs
