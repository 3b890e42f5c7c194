// `validate` as a CI gate: what no engine can load must not pass, whether or not --ref is
// given. Each case breaks a copy of our own NVFP4 or INT4 output (or the BF16 model) in code
// and expects exit 1 with the finding that names the problem.

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "qs/ckpt/io/file_io.h"
#include "quantized_outputs.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::EditableTensor;
using testing::has_finding;
using testing::kUnchanged;
using testing::QuantizedOutputs;
using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;
using Edit = testing::TensorEdit;

const std::filesystem::path kModel = testing::bundled_model();
const std::string kModule = "model.layers.1.mlp.experts.3.up_proj";  // [128, 256]

// Keeps the first `rows` rows of a 2-D tensor (bytes are row-major).
void keep_rows(EditableTensor& tensor, std::uint64_t rows) {
  const std::uint64_t row_bytes = tensor.bytes.size() / tensor.spec.shape[0];
  tensor.spec.shape[0] = rows;
  tensor.bytes.resize(rows * row_bytes);
}

void set_weight_shape(EditableTensor& tensor, std::int64_t rows, std::int64_t cols) {
  const std::int64_t dims[2] = {rows, cols};
  std::memcpy(tensor.bytes.data(), dims, sizeof(dims));
}

class ValidateGate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    outputs_ = std::make_unique<QuantizedOutputs>("validate-gate");
    outputs_->quantize_schemes({"int4", "nvfp4"});
    // 3-bit codes: ten per word, the top two bits of every word unused.
    const auto recipe = outputs_->directory() / "int3.yaml";
    write_file_atomically(recipe,
                          "format: compressed-tensors\nrules:\n  - name: experts\n"
                          "    category: routed_expert\n    action: int\n    bits: 3\n"
                          "    symmetric: true\n    group_size: 32\n");
    outputs_->quantize("int3", "--recipe " + quoted(recipe));
  }
  static void TearDownTestSuite() { outputs_.reset(); }

  // Plain `validate` (no --ref) must exit 1 with `kind` naming `tensor`.
  static void expect_problem(const std::filesystem::path& checkpoint, const std::string& kind,
                             const std::string& tensor) {
    auto result = run_cli("validate " + quoted(checkpoint));
    EXPECT_EQ(result.exit_code, 1) << kind << "\n" << result.output;
    EXPECT_TRUE(has_finding(result.output, kind, tensor)) << kind << " on " << tensor << "\n"
                                                          << result.output;
  }

  static inline std::unique_ptr<QuantizedOutputs> outputs_;
};

TEST_F(ValidateGate, OwnOutputStillValid) {
  for (const char* scheme : {"int4", "nvfp4"}) {
    auto result = run_cli("validate " + quoted(outputs_->path(scheme)));
    EXPECT_EQ(result.exit_code, 0) << scheme << "\n" << result.output;
  }
}

TEST_F(ValidateGate, Int4WithoutQuantizationConfig) {
  const auto broken = outputs_->broken_copy(
      "int4", kUnchanged, [](nlohmann::json& config) { config.erase("quantization_config"); });
  expect_problem(broken, "config.undeclared_quantization", kModule + ".weight_packed");
}

TEST_F(ValidateGate, Nvfp4WithoutQuantizationConfig) {
  const auto broken = outputs_->broken_copy(
      "nvfp4", kUnchanged, [](nlohmann::json& config) { config.erase("quantization_config"); });
  std::filesystem::remove(broken / "hf_quant_config.json");
  expect_problem(broken, "config.undeclared_quantization", kModule + ".weight");
}

TEST_F(ValidateGate, Nvfp4UnderAnotherQuantMethod) {
  const auto broken = outputs_->broken_copy("nvfp4", kUnchanged, [](nlohmann::json& config) {
    config["quantization_config"] = {{"quant_method", "fp8"}};
  });
  std::filesystem::remove(broken / "hf_quant_config.json");
  expect_problem(broken, "config.undeclared_quantization", kModule + ".weight");
}

// An expert stored with half its rows: every tensor of the module agrees with the others, so
// only the architecture says it is wrong.
TEST_F(ValidateGate, QuantizedExpertWithHalfItsRows) {
  const auto nvfp4 = outputs_->broken_copy("nvfp4", [](EditableTensor& tensor) {
    if (tensor.spec.name == kModule + ".weight" || tensor.spec.name == kModule + ".weight_scale")
      keep_rows(tensor, 64);
    return true;
  });
  expect_problem(nvfp4, "layout.shape_mismatch", kModule + ".weight");

  const auto int4 = outputs_->broken_copy("int4", [](EditableTensor& tensor) {
    const auto& name = tensor.spec.name;
    if (name == kModule + ".weight_packed" || name == kModule + ".weight_scale")
      keep_rows(tensor, 64);
    if (name == kModule + ".weight_zero_point") keep_rows(tensor, 64 * 4 / 32);
    if (name == kModule + ".weight_shape") set_weight_shape(tensor, 64, 256);
    return true;
  });
  expect_problem(int4, "layout.shape_mismatch", kModule + ".weight_packed");
}

TEST_F(ValidateGate, QuantizedExpertWithNoInputs) {
  const auto nvfp4 = outputs_->broken_copy("nvfp4", [](EditableTensor& tensor) {
    if (tensor.spec.name == kModule + ".weight" || tensor.spec.name == kModule + ".weight_scale") {
      tensor.spec.shape[1] = 0;
      tensor.bytes.clear();
    }
    return true;
  });
  expect_problem(nvfp4, "layout.shape_mismatch", kModule + ".weight");

  const auto int4 = outputs_->broken_copy("int4", [](EditableTensor& tensor) {
    if (tensor.spec.name == kModule + ".weight_shape") set_weight_shape(tensor, 128, 0);
    return true;
  });
  expect_problem(int4, "layout.shape_mismatch", kModule + ".weight_packed");
}

// A bit set in the unused top bits of a 3-bit word (not past the row's last field: the first
// word of the row) is corruption no reader sees, and validate reports it.
TEST_F(ValidateGate, BitsSetInTheUnusedTopOfAThreeBitWord) {
  auto clean = run_cli("validate " + quoted(outputs_->path("int3")));
  EXPECT_EQ(clean.exit_code, 0) << clean.output;
  const auto broken = outputs_->broken_copy("int3", [](EditableTensor& tensor) {
    if (tensor.spec.name == kModule + ".weight_packed") tensor.bytes[3] |= std::byte{0x80};
    return true;
  });
  expect_problem(broken, "int.padding", kModule + ".weight_packed");
}

TEST_F(ValidateGate, CheckpointWithoutConfig) {
  const auto broken = outputs_->broken_copy("int4", kUnchanged);
  std::filesystem::remove(broken / "config.json");
  auto result = run_cli("validate " + quoted(broken));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("config.missing"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("cannot be checked"), std::string::npos) << result.output;
}

// A weight_scale_2 of zero elements: the scalar readers must check the count, not read 4
// bytes that are not there.
TEST_F(ValidateGate, EmptyGlobalScale) {
  const auto broken = outputs_->broken_copy("nvfp4", testing::emptied(kModule + ".weight_scale_2"));
  expect_problem(broken, "nvfp4.shape_mismatch", kModule + ".weight_scale_2");
}

}  // namespace
}  // namespace qs

namespace qs {
namespace {

// A source whose config.json contradicts its tensors is refused by every job that reads it,
// with validate's layout check, before anything is planned or written (exit 2).
TEST(JobSources, RefusedWhenTheirConfigContradictsTheTensors) {
  ScratchDirectory scratch("job-sources");
  struct Case {
    std::string label;
    std::function<void(nlohmann::json&)> edit;
  };
  const std::vector<Case> cases = {
      {"hidden-size", [](nlohmann::json& config) { config["hidden_size"] = 512; }},
      // The shards hold layers 0-3 and the MTP layer 4.
      {"layers", [](nlohmann::json& config) { config["num_hidden_layers"] = 3; }},
  };
  for (const auto& c : cases) {
    const auto model = scratch.path() / c.label;
    std::filesystem::create_directories(model);
    testing::copy_bundled_model(model);
    auto config = nlohmann::json::parse(read_text_file(model / "config.json"));
    c.edit(config);
    write_file_atomically(model / "config.json", config.dump(2));
    const auto out = scratch.path() / (c.label + "-out");
    const auto tokens = quoted(kModel / "tokens.safetensors");
    for (const std::string& command : std::vector<std::string>{
             "quantize " + quoted(model) + " " + quoted(out) + " --scheme int4",
             "splice " + quoted(out) + " --base " + quoted(kModel) + " --take " +
                 quoted(std::filesystem::path(model.string() + ":category=routed_expert")),
             "mtp extract " + quoted(model) + " " + quoted(out),
             "calibrate " + quoted(model) + " --tokens " + tokens + " --out " +
                 quoted(out / "stats.qsc"),
             "eval --ref " + quoted(kModel) + " --model " + quoted(model) + " --tokens " + tokens,
             "generate " + quoted(model) + " --prompt x --max-new 1",
         }) {
      auto result = run_cli(command);
      EXPECT_EQ(result.exit_code, 2) << c.label << ": " << command << "\n" << result.output;
      EXPECT_NE(result.output.find("config.json implies"), std::string::npos)
          << c.label << ": " << command << "\n"
          << result.output;
      EXPECT_FALSE(std::filesystem::exists(out)) << c.label << ": " << command;
    }
  }
}

}  // namespace
}  // namespace qs
