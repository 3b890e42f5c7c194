// The vq weight format end to end on a small checkpoint built here through the libraries
// (tiers, uniform_codebook, pack_codes, the planner's config writer, SafetensorsWriter):
// detection, the registry's check with the codebook the config names, libquant's decoder
// (against the decode formula computed here from the unpacked codes), the runner's loader,
// mtp extract, validate (shapes, code ranges, codebooks, tiers, bpw), inspect's tier
// histogram, `quantsmith dequantize`, and every malformed piece refused naming its tensor.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/formats/quantized_weight.h"
#include "qs/ckpt/formats/vq_declaration.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/safetensors.h"
#include "qs/ckpt/plan/mtp_extract_plan.h"
#include "qs/ckpt/validate/checkpoint_summary.h"
#include "qs/ckpt/validate/validation.h"
#include "qs/quant/dequantize_transform.h"
#include "qs/quant/nvfp4_validation.h"
#include "qs/quant/vq.h"
#include "qs/run/weight_loader.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;

// A tier the presets lack whose 12-bit fields can hold codes ≥ K (the range check's case).
const VqTier kNarrow{"vq3n", 4, 3000, VqCodebookKind::Learned};

struct VqModuleCase {
  std::string module;
  std::uint64_t rows, cols;
  VqTier tier;
};

const std::vector<VqModuleCase>& module_cases() {
  static const std::vector<VqModuleCase> cases = {
      {"model.layers.1.mlp.experts.0.gate_proj", 16, 256, *preset_vq_tier("vq2")},
      {"model.layers.1.mlp.experts.0.up_proj", 16, 256, *preset_vq_tier("vq2")},
      {"model.layers.1.mlp.experts.0.down_proj", 256, 128, *preset_vq_tier("vq3")},
      {"model.layers.1.mlp.experts.1.down_proj", 256, 128, *preset_vq_tier("int1")},
      {"model.layers.2.mlp.experts.0.down_proj", 8, 384, *preset_vq_tier("vq1")},
      {"model.layers.2.mlp.experts.1.down_proj", 8, 128, kNarrow},
      {"model.layers.2.mlp.experts.0.gate_proj", 16, 128, *preset_vq_tier("vq2")},
      {"model.layers.2.mlp.experts.0.up_proj", 16, 128, *preset_vq_tier("vq2")},
  };
  return cases;
}

std::string codebook_name(const VqTier& tier) { return "vq_codebooks." + tier.name; }

// A learned-looking codebook: values rounded to F16, as the checkpoint stores them.
VqCodebook codebook_for(const VqTier& tier) {
  if (tier.kind == VqCodebookKind::Uniform) return vq::uniform_codebook(tier, DType::F16);
  VqCodebook codebook{tier, DType::F16, std::vector<float>(std::uint64_t{tier.k} * tier.d)};
  std::mt19937 random(tier.k * 31 + tier.d);
  std::normal_distribution<float> normal;
  for (auto& value : codebook.codewords) value = normal(random);
  std::vector<std::byte> bytes(codebook.codewords.size() * 2);
  encode_from_f32(DType::F16, codebook.codewords, bytes);
  decode_to_f32(DType::F16, bytes, codebook.codewords);
  return codebook;
}

struct Encoded {
  std::vector<std::uint32_t> codes;  // [rows, cols/d]
  std::vector<float> scales;         // [rows, cols/128], BF16-rounded
};

Encoded encoded_for(const VqModuleCase& c, std::uint32_t seed) {
  std::mt19937 random(seed);
  Encoded encoded;
  encoded.codes.resize(c.rows * (c.cols / c.tier.d));
  for (auto& code : encoded.codes) code = random() % c.tier.k;
  encoded.scales.resize(c.rows * (c.cols / kVqScaleGroup));
  for (auto& scale : encoded.scales) scale = 0.01f + static_cast<float>(random() % 1000) * 1e-4f;
  encoded.scales[0] = 0.0f;  // an all-zero group
  std::vector<std::byte> bytes(encoded.scales.size() * 2);
  encode_from_f32(DType::BF16, encoded.scales, bytes);
  decode_to_f32(DType::BF16, bytes, encoded.scales);
  return encoded;
}

// The decode formula of docs/formats/vq.md, written out here.
std::vector<float> expected_weight(const VqModuleCase& c, const Encoded& encoded,
                                   const VqCodebook& codebook) {
  std::vector<float> weight(c.rows * c.cols);
  const std::uint64_t per_row = c.cols / c.tier.d, groups = c.cols / kVqScaleGroup;
  for (std::uint64_t r = 0; r < c.rows; ++r)
    for (std::uint64_t col = 0; col < c.cols; ++col) {
      const auto code = encoded.codes[r * per_row + col / c.tier.d];
      weight[r * c.cols + col] = codebook.codewords[code * c.tier.d + col % c.tier.d] *
                                 encoded.scales[r * groups + col / kVqScaleGroup];
    }
  return weight;
}

std::uint64_t elements(const TensorSpec& spec) {
  std::uint64_t count = 1;
  for (const auto extent : spec.shape) count *= extent;
  return count;
}

// Single-quoted for the shell.
std::string shell(const std::string& text) { return quoted(std::filesystem::path(text)); }

struct Tensor {
  TensorSpec spec;
  std::vector<std::byte> bytes;
};

class VqFormat : public ::testing::Test {
 protected:
  VqFormat() {
    std::uint32_t seed = 1;
    std::map<std::string, VqTier> tiers;
    for (const auto& c : module_cases()) {
      encoded_.push_back(encoded_for(c, seed++));
      tiers.emplace(c.tier.name, c.tier);
      model_.vq_modules.push_back({c.module, c.tier, codebook_name(c.tier)});
    }
    for (const auto& [name, tier] : tiers) codebooks_.emplace(name, codebook_for(tier));
  }

  std::vector<Tensor> tensors() const {
    std::vector<Tensor> out;
    for (std::size_t i = 0; i < module_cases().size(); ++i) {
      const auto& c = module_cases()[i];
      WeightEncoding encoding;
      encoding.vq_tier = c.tier;
      const auto specs =
          weight_format(WeightLayout::Vq).output_specs(c.module, c.rows, c.cols, encoding);
      Tensor codes{specs[0], std::vector<std::byte>(specs[0].byte_size())};
      std::vector<std::int32_t> packed(elements(specs[0]));
      vq::pack_codes(encoded_[i].codes, c.rows, c.cols, c.tier, packed);
      std::memcpy(codes.bytes.data(), packed.data(), codes.bytes.size());
      Tensor scales{specs[1], std::vector<std::byte>(specs[1].byte_size())};
      encode_from_f32(DType::BF16, encoded_[i].scales, scales.bytes);
      out.push_back(std::move(codes));
      out.push_back(std::move(scales));
    }
    for (const auto& [name, codebook] : codebooks_) {
      Tensor tensor{{codebook_name(codebook.tier), DType::F16, {codebook.tier.k, codebook.tier.d}},
                    std::vector<std::byte>(codebook.codewords.size() * 2)};
      encode_from_f32(DType::F16, codebook.codewords, tensor.bytes);
      out.push_back(std::move(tensor));
    }
    // A float Linear beside them, and a norm.
    out.push_back({{"model.layers.1.self_attn.o_proj.weight", DType::BF16, {8, 128}},
                   std::vector<std::byte>(8 * 128 * 2)});
    out.push_back({{"model.norm.weight", DType::BF16, {128}}, std::vector<std::byte>(256)});
    return out;
  }

  nlohmann::json config() const {
    QuantizedModel model = model_;
    model.unquantized_linears = {"model.layers.1.self_attn.o_proj"};
    return {{"model_type", "vq_format_test"},
            {"num_hidden_layers", 2},
            {"vocab_size", 64},
            {"hidden_size", 128},
            {"num_nextn_predict_layers", 1},
            {"quantization_config", compressed_tensors_config_block(model)}};
  }

  // The checkpoint with `edit` applied to each tensor (false drops it) and to the config.
  std::filesystem::path write(const std::string& name,
                              const std::function<bool(Tensor&)>& edit = {},
                              const std::function<void(nlohmann::json&)>& edit_config = {}) {
    const auto directory = scratch_.path() / name;
    std::filesystem::create_directories(directory);
    std::vector<Tensor> kept;
    for (auto& tensor : tensors())
      if (!edit || edit(tensor)) kept.push_back(std::move(tensor));
    std::vector<TensorSpec> specs;
    for (const auto& tensor : kept) specs.push_back(tensor.spec);
    SafetensorsWriter writer(directory / "model.safetensors", specs);
    for (const auto& tensor : kept) writer.write_tensor(tensor.spec.name, tensor.bytes);
    writer.commit();
    auto json = config();
    if (edit_config) edit_config(json);
    std::ofstream(directory / "config.json") << json.dump(2);
    return directory;
  }

  std::vector<float> expected(std::size_t i) const {
    const auto& c = module_cases()[i];
    return expected_weight(c, encoded_[i], codebooks_.at(c.tier.name));
  }

  QuantizedModel model_;
  std::vector<Encoded> encoded_;
  std::map<std::string, VqCodebook> codebooks_;
  ScratchDirectory scratch_{"vq-format"};
};

std::string load_error(const std::filesystem::path& path, const std::string& module,
                       std::string* tensor = nullptr) {
  try {
    const auto checkpoint = Checkpoint::open(path);
    run::WeightLoader(checkpoint).linear(module);
  } catch (const Error& error) {
    if (tensor) *tensor = error.tensor();
    return error.kind();
  }
  return "no error";
}

TEST_F(VqFormat, DetectsChecksDecodesAndLoadsEveryTier) {
  const auto checkpoint = Checkpoint::open(write("good"));
  const auto modules = modules_of(checkpoint);
  const auto declaration = VqDeclaration::of(checkpoint);
  const run::WeightLoader loader(checkpoint);
  for (std::size_t i = 0; i < module_cases().size(); ++i) {
    const auto& c = module_cases()[i];
    SCOPED_TRACE(c.module);
    const auto& parameters = modules.at(c.module);
    const WeightFormat& format = detect_weight_format(parameters);
    ASSERT_EQ(format.layout, WeightLayout::Vq);
    EXPECT_EQ(format.logical_shape(parameters), (Shape{c.rows, c.cols}));
    EXPECT_EQ(declaration.tier_of(c.module)->name, c.tier.name);
    const auto with = declaration.with_codebook(checkpoint, c.module, parameters, "test.bad");
    const auto weight = format.check(c.module, with, 0, "test.bad");
    EXPECT_EQ(weight.request.rows, c.rows);
    EXPECT_EQ(weight.request.cols, c.cols);
    EXPECT_EQ(weight.request.vq_tier->d, c.tier.d);
    EXPECT_EQ(weight.request.vq_tier->k, c.tier.k);
    // The runner decodes through the registry and libquant's decoder table: the formula.
    const auto matrix = loader.linear(c.module);
    ASSERT_EQ(matrix.rows, c.rows);
    ASSERT_EQ(matrix.cols, c.cols);
    const auto want = expected(i);
    EXPECT_EQ(std::memcmp(matrix.values.data(), want.data(), want.size() * sizeof(float)), 0);
  }
  // Detection counts them under one label.
  const auto detection = detect_quantization(checkpoint);
  EXPECT_EQ(detection.layouts.at("vq").modules, module_cases().size());
}

TEST_F(VqFormat, MalformedPiecesAreRefusedNamingTheTensor) {
  const std::string gate = "model.layers.1.mlp.experts.0.gate_proj";
  std::string tensor;
  // The codebook the config names is missing.
  EXPECT_EQ(load_error(write("no-codebook",
                             [](Tensor& t) { return t.spec.name != "vq_codebooks.vq2"; }),
                       gate, &tensor),
            "run.bad_quantized_weight");
  EXPECT_EQ(tensor, "vq_codebooks.vq2");
  // A codebook of another shape than the tier's [K, d].
  EXPECT_EQ(load_error(write("codebook-shape",
                             [](Tensor& t) {
                               if (t.spec.name == "vq_codebooks.vq2") {
                                 t.spec.shape = {128, 8};
                               }
                               return true;
                             }),
                       gate, &tensor),
            "run.bad_quantized_weight");
  EXPECT_EQ(tensor, "vq_codebooks.vq2");
  // A codebook in F32 (codebooks are F16 or BF16).
  EXPECT_EQ(load_error(write("codebook-dtype",
                             [](Tensor& t) {
                               if (t.spec.name == "vq_codebooks.vq2") {
                                 t.spec.dtype = DType::F32;
                                 t.spec.shape = {256, 2};
                               }
                               return true;
                             }),
                       gate, &tensor),
            "run.bad_quantized_weight");
  EXPECT_EQ(tensor, "vq_codebooks.vq2");
  // Codes of the wrong width.
  EXPECT_EQ(load_error(write("codes-shape",
                             [&](Tensor& t) {
                               if (t.spec.name == gate + ".vq_codes") {
                                 t.spec.shape = {16, 8};
                                 t.bytes.resize(16 * 8 * 4);
                               }
                               return true;
                             }),
                       gate, &tensor),
            "run.bad_quantized_weight");
  EXPECT_EQ(tensor, gate + ".vq_codes");
  // A module whose tier the config does not define.
  EXPECT_EQ(load_error(write("unknown-tier", {},
                             [&](nlohmann::json& config) {
                               config["quantization_config"]["vq"]["modules"][gate]["tier"] =
                                   "vq9";
                             }),
                       gate, &tensor),
            "vq.unknown_tier");
  EXPECT_EQ(tensor, gate);
  // A module the config does not declare: nothing says which codebook it indexes.
  EXPECT_EQ(load_error(write("undeclared", {},
                             [&](nlohmann::json& config) {
                               config["quantization_config"]["vq"]["modules"].erase(gate);
                             }),
                       gate, &tensor),
            "run.bad_quantized_weight");
  EXPECT_EQ(tensor, gate + ".vq_codes");
}

TEST_F(VqFormat, ValidateFindsNothingWrongInAGoodOneAndEachProblemInABadOne) {
  const auto good = Checkpoint::open(write("good"));
  auto report = validate_checkpoint(good, {});
  validate_nvfp4(good, {}, report);
  std::string text;
  for (const auto& finding : report.findings)
    text += finding.kind + " " + finding.tensor + ": " + finding.message + "\n";
  EXPECT_FALSE(report.has_problems()) << text;
  EXPECT_NE(std::find(report.checks_run.begin(), report.checks_run.end(), "vq"),
            report.checks_run.end());

  auto problems_of = [&](const std::filesystem::path& path) {
    const auto checkpoint = Checkpoint::open(path);
    ValidationReport bad;
    validate_nvfp4(checkpoint, {}, bad);
    std::map<std::string, std::string> kinds;  // kind → tensor
    for (const auto& finding : bad.findings)
      if (finding.severity == Severity::Problem) kinds[finding.kind] = finding.tensor;
    return kinds;
  };
  // A code ≥ K: read and reported at the codes tensor.
  const std::string narrow = "model.layers.2.mlp.experts.1.down_proj";
  const auto out_of_range = problems_of(write("code-range", [&](Tensor& t) {
    if (t.spec.name == narrow + ".vq_codes") {
      // Row 3, index 7: 12-bit field at bits 84..95 of the row, the top 12 bits of its word 2
      // (12 words per row). pack_codes refuses such a code, so it is written by hand.
      std::vector<std::int32_t> packed(elements(t.spec));
      std::memcpy(packed.data(), t.bytes.data(), t.bytes.size());
      auto& word = reinterpret_cast<std::uint32_t&>(packed[3 * 12 + 2]);
      word = (word & 0x000FFFFFu) | (3500u << 20);  // K is 3000
      std::memcpy(t.bytes.data(), packed.data(), t.bytes.size());
    }
    return true;
  }));
  ASSERT_TRUE(out_of_range.contains("vq.code_range"));
  EXPECT_EQ(out_of_range.at("vq.code_range"), narrow + ".vq_codes");
  // A missing codebook, a declared module not stored, a NaN scale.
  const auto missing = problems_of(write("missing", [&](Tensor& t) {
    if (t.spec.name == "model.layers.1.mlp.experts.0.down_proj.vq_scales")
      encode_from_f32(DType::BF16, std::vector<float>(elements(t.spec), NAN), t.bytes);
    return t.spec.name != "vq_codebooks.vq1" && !t.spec.name.starts_with("model.layers.1.mlp.experts.1.");
  }));
  EXPECT_EQ(missing.at("vq.invalid"), "vq_codebooks.vq1");
  EXPECT_EQ(missing.at("vq.missing_module"), "model.layers.1.mlp.experts.1.down_proj");
  EXPECT_EQ(missing.at("vq.bad_scale"), "model.layers.1.mlp.experts.0.down_proj.vq_scales");
  // VQ tensors the config does not declare.
  const auto undeclared = problems_of(write("undeclared", {}, [&](nlohmann::json& config) {
    config["quantization_config"]["vq"]["modules"].erase(narrow);
  }));
  EXPECT_EQ(undeclared.at("vq.undeclared_module"), narrow + ".vq_codes");
}

TEST_F(VqFormat, InspectValidateAndDequantizeFromTheCommandLine) {
  const auto path = write("good");
  // inspect: the tier histogram with bytes and bits per weight, per layer, and the codebooks.
  const auto inspected = run_cli("inspect --json " + quoted(path));
  ASSERT_EQ(inspected.exit_code, 0) << inspected.output;
  const auto summary = nlohmann::json::parse(inspected.standard_output);
  const auto& vq = summary["quantization"]["vq"];
  EXPECT_EQ(vq["tiers"]["vq2"]["modules"], 4);
  EXPECT_EQ(vq["tiers"]["vq2"]["weights"], 2 * 16 * 256 + 2 * 16 * 128);
  // vq2: 8-bit codes per 4 weights + a 16-bit scale per 128: 2.125 bits per weight.
  EXPECT_DOUBLE_EQ(vq["tiers"]["vq2"]["bits_per_weight"].get<double>(), 2.125);
  EXPECT_DOUBLE_EQ(vq["tiers"]["vq3"]["bits_per_weight"].get<double>(), 3.125);
  EXPECT_DOUBLE_EQ(vq["tiers"]["vq1"]["bits_per_weight"].get<double>(), 1.125);
  EXPECT_EQ(vq["layers"]["2"]["vq1"]["modules"], 1);
  EXPECT_EQ(vq["layers"]["2"]["vq2"]["modules"], 2);
  EXPECT_EQ(vq["codebooks"].size(), codebooks_.size());
  const auto text = run_cli("inspect --verbose " + quoted(path));
  EXPECT_NE(text.output.find("layer 2 vq1"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("codebook vq_codebooks.vq3 (tier vq3, 1 modules): F16 [4096, 4]"),
            std::string::npos)
      << text.output;

  const auto validated = run_cli("validate --json " + quoted(path));
  EXPECT_EQ(validated.exit_code, 0) << validated.output;
  const auto report = nlohmann::json::parse(validated.standard_output);
  EXPECT_EQ(report["vq"]["total"]["modules"], module_cases().size());

  // dequantize: float weights equal to the runner's decoding, config without quantization.
  const auto out = scratch_.path() / "dequantized";
  const auto result = run_cli("dequantize --dtype f32 " + quoted(path) + " " + quoted(out));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto dequantized = Checkpoint::open(out);
  EXPECT_FALSE(dequantized.config().contains("quantization_config"));
  EXPECT_FALSE(dequantized.find("vq_codebooks.vq2"));
  EXPECT_TRUE(dequantized.find("model.norm.weight"));
  for (std::size_t i = 0; i < module_cases().size(); ++i) {
    const auto& c = module_cases()[i];
    const auto weight = dequantized.find(c.module + ".weight");
    ASSERT_TRUE(weight) << c.module;
    EXPECT_FALSE(dequantized.find(c.module + ".vq_codes"));
    EXPECT_EQ(weight->info->dtype, DType::F32);
    std::vector<float> values(weight->info->element_count());
    decode_to_f32(DType::F32, weight->shard->read(*weight->info), values);
    EXPECT_EQ(values, expected(i)) << c.module;
  }
  // And validate --ref of the VQ checkpoint against its own dequantization: every VQ module is
  // compared, with zero error.
  const auto against = run_cli("validate --json --ref " + quoted(out) + " " + quoted(path));
  EXPECT_EQ(against.exit_code, 0) << against.output;
  const auto compared = nlohmann::json::parse(against.standard_output);
  EXPECT_EQ(compared["reference_comparisons"].size(), module_cases().size());
  for (const auto& row : compared["reference_comparisons"]) {
    EXPECT_EQ(row["relative_error"], 0.0) << row.dump();
    EXPECT_TRUE(row["format"].get<std::string>().starts_with("vq/")) << row.dump();
  }
}

// A python3 with numpy: $QS_PYTHON, the conformance venv, python3 on the PATH or Debian's
// /usr/bin/python3 (scripts/setup.sh installs python3-numpy); empty when
// none imports numpy.
std::string python_with_numpy() {
  std::vector<std::string> candidates;
  if (const char* chosen = std::getenv("QS_PYTHON")) candidates.emplace_back(chosen);
  candidates.push_back(std::string(QS_SOURCE_DIR) + "/.venv-conformance/bin/python");
  candidates.emplace_back("python3");
  candidates.emplace_back("/usr/bin/python3");  // Debian's, where python3-numpy installs
  for (const auto& python : candidates)
    if (std::system((shell(python) + " -c 'import numpy' >/dev/null 2>&1").c_str()) == 0)
      return python;
  return {};
}

// scripts/conformance/check_vq_decode.py, a numpy decoder written from docs/formats/vq.md,
// against `quantsmith dequantize --dtype f32`: equal bit for bit. It must also catch a
// difference: the same script on a dequantization of another checkpoint fails.
TEST_F(VqFormat, IndependentNumpyDecoderAgreesWithDequantize) {
  const std::string python = python_with_numpy();
  if (python.empty()) GTEST_SKIP() << "no python3 with numpy (set QS_PYTHON)";
  const auto path = write("good");
  const auto out = scratch_.path() / "dequantized-f32";
  ASSERT_EQ(run_cli("dequantize --dtype f32 " + quoted(path) + " " + quoted(out)).exit_code, 0);
  const std::string script =
      shell(std::string(QS_SOURCE_DIR) + "/scripts/conformance/check_vq_decode.py");
  const auto output = scratch_.path() / "check.txt";
  const int status = std::system((shell(python) + " " + script + " " + quoted(path) + " " +
                                  quoted(out) + " > " + quoted(output) + " 2>&1")
                                     .c_str());
  std::ifstream text(output);
  const std::string printed((std::istreambuf_iterator<char>(text)), {});
  EXPECT_EQ(status, 0) << printed;
  EXPECT_NE(printed.find("8 VQ modules decoded with numpy, all equal"), std::string::npos)
      << printed;
  // A checkpoint whose scales differ decodes to other values: the script must say so.
  const auto other = write("other-scales", [](Tensor& t) {
    if (t.spec.name == "model.layers.1.mlp.experts.0.gate_proj.vq_scales")
      encode_from_f32(DType::BF16, std::vector<float>(elements(t.spec), 0.5f), t.bytes);
    return true;
  });
  EXPECT_NE(std::system((shell(python) + " " + script + " " + quoted(other) + " " + quoted(out) +
                         " >/dev/null 2>&1")
                            .c_str()),
            0);
}

TEST_F(VqFormat, MtpExtractDequantizesVqModulesOfTheMtpLayer) {
  const auto checkpoint = Checkpoint::open(write("good"));
  const auto planned = plan_mtp_extract(checkpoint, {}, [](const DequantizeRequest& request) {
    return make_dequantize_transform(request);
  });
  // Layer 2 is the MTP layer (num_hidden_layers 2): its two VQ modules, decoded.
  auto dequantized = planned.dequantized_modules;
  std::sort(dequantized.begin(), dequantized.end());
  EXPECT_EQ(dequantized,
            (std::vector<std::string>{"model.layers.2.mlp.experts.0.down_proj",
                                      "model.layers.2.mlp.experts.0.gate_proj",
                                      "model.layers.2.mlp.experts.0.up_proj",
                                      "model.layers.2.mlp.experts.1.down_proj"}));
  for (const auto& spec : planned.plan.output_specs())
    EXPECT_FALSE(spec.name.ends_with(".vq_codes") || spec.name.starts_with("vq_codebooks"))
        << spec.name;
}

// splice moves VQ modules with their codebook tensors and config entries; one codebook name
// with different values in the two sources cannot be shared.
TEST_F(VqFormat, SpliceCarriesCodebooksAndRefusesAClash) {
  const auto base = write("base");
  const auto source = write("source");
  auto take = [](const std::filesystem::path& from, const std::string& selector) {
    return "--take " + quoted(std::filesystem::path(from.string() + ":" + selector));
  };
  const auto out = scratch_.path() / "spliced";
  const auto result =
      run_cli("splice " + quoted(out) + " --base " + quoted(base) + " " + take(source, "layers=1"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto spliced = Checkpoint::open(out);
  const auto declaration = VqDeclaration::of(spliced);
  EXPECT_EQ(declaration.modules().size(), module_cases().size());
  for (const auto& [name, codebook] : codebooks_)
    EXPECT_TRUE(spliced.find(codebook_name(codebook.tier))) << name;
  const run::WeightLoader loader(spliced);
  for (std::size_t i = 0; i < module_cases().size(); ++i) {
    const auto matrix = loader.linear(module_cases()[i].module);
    EXPECT_EQ(matrix.values, expected(i)) << module_cases()[i].module;
  }
  const auto validated = run_cli("validate " + quoted(out));
  EXPECT_EQ(validated.exit_code, 0) << validated.output;

  // The base's vq2 codebook differs: its layer-2 gate/up and the source's layer-1 ones index
  // one output codebook, which cannot hold both.
  const auto other = write("other-vq2", [](Tensor& t) {
    if (t.spec.name == "vq_codebooks.vq2") t.bytes[0] ^= std::byte{1};
    return true;
  });
  const auto clash = run_cli("splice " + quoted(scratch_.path() / "clash") + " --base " +
                             quoted(other) + " " + take(source, "layers=1"));
  EXPECT_EQ(clash.exit_code, 2) << clash.output;
  EXPECT_NE(clash.output.find("both hold this codebook, with different values"),
            std::string::npos)
      << clash.output;
  EXPECT_NE(clash.output.find("vq_codebooks.vq2"), std::string::npos) << clash.output;
}

// A real job's output (the bundled GLM model, every routed expert, MTP layer included, uniform
// vq2 without compensation: no statistics needed): validate against the model's own layout,
// inspect, mtp extract of the VQ MTP layer, and dequantize.
TEST(VqJobOutput, ReadsEverywhere) {
  ScratchDirectory scratch("vq-job-output");
  const auto model = testing::bundled_model();
  const auto recipe = scratch.path() / "vq2.yaml";
  std::ofstream(recipe) << "format: compressed-tensors\nrules:\n  - {name: experts, category: "
                           "routed_expert, action: vq, tiers: [vq2], compensation: none}\n";
  const auto out = scratch.path() / "vq";
  const auto quantized = run_cli("quantize " + quoted(model) + " " + quoted(out) + " --recipe " +
                                 quoted(recipe));
  ASSERT_EQ(quantized.exit_code, 0) << quantized.output;
  const auto validated = run_cli("validate --ref " + quoted(model) + " " + quoted(out));
  EXPECT_EQ(validated.exit_code, 0) << validated.output;
  EXPECT_NE(validated.output.find("vq: 192 modules, 2.125 bits per weight"), std::string::npos)
      << validated.output;
  const auto inspected = run_cli("inspect " + quoted(out));
  EXPECT_NE(inspected.output.find("compressed-tensors/dense+vq"), std::string::npos)
      << inspected.output;
  const auto draft = scratch.path() / "draft";
  const auto extracted = run_cli("mtp extract --json " + quoted(out) + " " + quoted(draft));
  ASSERT_EQ(extracted.exit_code, 0) << extracted.output;
  EXPECT_EQ(nlohmann::json::parse(extracted.standard_output)["dequantized_modules"], 48);
  EXPECT_EQ(run_cli("validate " + quoted(draft)).exit_code, 0);
  const auto dequantized = scratch.path() / "bf16";
  ASSERT_EQ(run_cli("dequantize " + quoted(out) + " " + quoted(dequantized)).exit_code, 0);
  const auto bf16 = Checkpoint::open(dequantized);
  const auto weight = bf16.find("model.layers.4.mlp.experts.3.up_proj.weight");
  ASSERT_TRUE(weight);
  EXPECT_EQ(weight->info->dtype, DType::BF16);
  EXPECT_EQ(run_cli("validate " + quoted(dequantized)).exit_code, 0);
}

}  // namespace
}  // namespace qs
