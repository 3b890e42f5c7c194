// The runner on the deepseek_v3 and qwen3_moe fixtures against transformers' fp32 outputs
// (tests/data/README.md: how they were made, the noise floor, the margins). Tolerances as for
// the GLM-5 fixture: max |Δ| ≤ 2e-4 on logits and MTP logits, ≤ 5e-5 on the final hidden state,
// the same argmax everywhere, the greedy continuation exact.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/quant/cuda_availability.h"
#include "qs/run/language_model.h"
#include "reference_outputs.h"
#include "test_support.h"

namespace qs::run {
namespace {

struct FamilyFixture {
  const char* directory;
  bool has_mtp;
};

// gtest and ctest name the case by its directory, not its bytes.
void PrintTo(const FamilyFixture& fixture, std::ostream* out) { *out << fixture.directory; }

std::string fixture_name(const ::testing::TestParamInfo<FamilyFixture>& info) {
  std::string name = info.param.directory;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

std::filesystem::path fixture_path(const FamilyFixture& fixture) {
  return std::filesystem::path(QS_TEST_DATA_DIR) / fixture.directory;
}

template <typename T>
std::vector<T> read_reference(const FamilyFixture& fixture, const std::string& name) {
  const auto file = fixture_path(fixture) / "reference.safetensors";
  if constexpr (std::is_same_v<T, float>)
    return qs::testing::reference_floats(file, name);
  else
    return qs::testing::reference_ints(file, name);
}

using qs::testing::compare;
using qs::testing::expect_same_argmax;

constexpr std::uint64_t kRows = 16, kSeq = 32, kVocab = 512;

class FamilyRunner : public ::testing::TestWithParam<FamilyFixture> {
 protected:
  Checkpoint checkpoint_ = Checkpoint::open(fixture_path(GetParam()));
  LanguageModel model_{checkpoint_};
  std::vector<std::int32_t> input_ids_ = read_reference<std::int32_t>(GetParam(), "input_ids");
};

TEST_P(FamilyRunner, PrefillLogitsAndFinalHiddenMatchTransformers) {
  const auto output = model_.forward(input_ids_, kRows, kSeq);
  const auto expected = read_reference<float>(GetParam(), "logits");
  const auto logits = compare(output.logits, expected);
  const auto hidden =
      compare(output.final_hidden.values, read_reference<float>(GetParam(), "final_hidden"));
  std::printf("%s: logits max %.3g mean %.3g; final_hidden max %.3g mean %.3g\n",
              GetParam().directory, logits.max_abs, logits.mean_abs, hidden.max_abs,
              hidden.mean_abs);
  EXPECT_LE(logits.max_abs, 2e-4);
  EXPECT_LE(logits.mean_abs, 5e-6);
  EXPECT_LE(hidden.max_abs, 5e-5);
  EXPECT_LE(hidden.mean_abs, 1e-6);
  expect_same_argmax(output.logits, expected, kVocab);
}

TEST_P(FamilyRunner, MtpHeadMatchesTransformersOrIsAbsent) {
  const auto output = model_.forward(input_ids_, kRows, kSeq);
  EXPECT_EQ(model_.has_mtp(), GetParam().has_mtp);
  if (!GetParam().has_mtp) {
    EXPECT_EQ(testing::error_kind_of([&] { model_.mtp_logits(output.final_hidden, input_ids_); }),
              "run.no_mtp_layer");
    return;
  }
  const auto mtp = model_.mtp_logits(output.final_hidden, input_ids_);
  const auto expected = read_reference<float>(GetParam(), "mtp_logits");
  const auto difference = compare(mtp, expected);
  std::printf("%s: mtp_logits max %.3g mean %.3g\n", GetParam().directory, difference.max_abs,
              difference.mean_abs);
  EXPECT_LE(difference.max_abs, 2e-4);
  EXPECT_LE(difference.mean_abs, 5e-6);
  expect_same_argmax(mtp, expected, kVocab);
}

TEST_P(FamilyRunner, GreedyContinuationMatchesTransformersWithAndWithoutTheCache) {
  const auto prompt = read_reference<std::int32_t>(GetParam(), "greedy_prompt");
  const auto expected = read_reference<std::int32_t>(GetParam(), "greedy_tokens");
  EXPECT_EQ(model_.generate(prompt, expected.size()), expected);
  std::vector<std::int32_t> tokens = prompt;
  for (std::size_t step = 0; step < expected.size(); ++step) {
    const auto output = model_.forward(tokens, 1, tokens.size());
    const auto last = output.logits.end() - kVocab;
    tokens.push_back(static_cast<std::int32_t>(std::max_element(last, output.logits.end()) - last));
  }
  EXPECT_EQ(std::vector<std::int32_t>(tokens.end() - expected.size(), tokens.end()), expected);
}

TEST_P(FamilyRunner, LayerByLayerEqualsAllAtOnce) {
  const auto output = model_.forward(input_ids_, 2, kSeq);
  auto hidden = model_.embed(input_ids_, 2, kSeq);
  for (std::uint64_t layer = 0; layer < model_.architecture().dimensions.num_hidden_layers; ++layer)
    model_.run_layer(layer, hidden, {});
  model_.final_norm(hidden);
  EXPECT_EQ(hidden.values, output.final_hidden.values);
}

TEST_P(FamilyRunner, CublasForwardMatchesTransformers) {
  const auto cuda = cuda_availability();
  if (!cuda.usable) GTEST_SKIP() << "no CUDA device: " << cuda.reason;
  const LanguageModel model(checkpoint_, GemmDevice::Cuda);
  const auto output = model.forward(input_ids_, kRows, kSeq);
  const auto expected = read_reference<float>(GetParam(), "logits");
  const auto logits = compare(output.logits, expected);
  EXPECT_LE(logits.max_abs, 2e-4);
  EXPECT_LE(logits.mean_abs, 5e-6);
  expect_same_argmax(output.logits, expected, kVocab);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FamilyRunner,
                         ::testing::Values(FamilyFixture{"deepseek-v3-tiny", true},
                                           FamilyFixture{"deepseek-v3-tiny-fp8", true},
                                           FamilyFixture{"qwen3-moe-tiny", false}),
                         fixture_name);

}  // namespace
}  // namespace qs::run
