// The runner against the bundled model's reference outputs (tests/data/glm5-tiny/README.md),
// within the tolerances the README gives for an fp32 implementation.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/io/safetensors.h"
#include "qs/quant/cuda_availability.h"
#include "qs/run/language_model.h"
#include "reference_outputs.h"
#include "test_support.h"

namespace qs::run {
namespace {

const std::filesystem::path kModel = testing::bundled_model();

template <typename T>
std::vector<T> read_reference(const std::string& name) {
  const auto file = kModel / "reference.safetensors";
  if constexpr (std::is_same_v<T, float>)
    return qs::testing::reference_floats(file, name);
  else
    return qs::testing::reference_ints(file, name);
}

using qs::testing::compare;
using qs::testing::expect_same_argmax;

class Runner : public ::testing::Test {
 protected:
  Checkpoint checkpoint_ = Checkpoint::open(kModel);
  LanguageModel model_{checkpoint_};
  std::vector<std::int32_t> input_ids_ = read_reference<std::int32_t>("input_ids");
};

TEST_F(Runner, PrefillLogitsAndFinalHiddenMatchTheReference) {
  const auto output = model_.forward(input_ids_, 4, 64);
  const auto logits = compare(output.logits, read_reference<float>("logits"));
  const auto hidden = compare(output.final_hidden.values, read_reference<float>("final_hidden"));
  std::printf("logits max %.3g mean %.3g; final_hidden max %.3g mean %.3g\n", logits.max_abs,
              logits.mean_abs, hidden.max_abs, hidden.mean_abs);
  EXPECT_LE(logits.max_abs, 2e-4);
  EXPECT_LE(logits.mean_abs, 5e-6);
  EXPECT_LE(hidden.max_abs, 5e-5);
  EXPECT_LE(hidden.mean_abs, 1e-6);
  expect_same_argmax(output.logits, read_reference<float>("logits"), 512);
}

TEST_F(Runner, MtpLogitsMatchTheReference) {
  const auto output = model_.forward(input_ids_, 4, 64);
  const auto mtp = model_.mtp_logits(output.final_hidden, input_ids_);
  const auto difference = compare(mtp, read_reference<float>("mtp_logits"));
  std::printf("mtp_logits max %.3g mean %.3g\n", difference.max_abs, difference.mean_abs);
  EXPECT_LE(difference.max_abs, 2e-4);
  EXPECT_LE(difference.mean_abs, 5e-6);
  expect_same_argmax(mtp, read_reference<float>("mtp_logits"), 512);
}

TEST_F(Runner, SparseAttentionWithIndexTopk16MatchesTheReference) {
  const auto output = model_.forward(input_ids_, 4, 64, {.index_topk = 16});
  const auto difference = compare(output.logits, read_reference<float>("logits_topk16"));
  std::printf("logits_topk16 max %.3g mean %.3g\n", difference.max_abs, difference.mean_abs);
  EXPECT_LE(difference.max_abs, 2e-4);
  EXPECT_LE(difference.mean_abs, 5e-6);
  expect_same_argmax(output.logits, read_reference<float>("logits_topk16"), 512);
}

TEST_F(Runner, GreedyContinuationMatchesTheReference) {
  std::vector<std::int32_t> tokens = read_reference<std::int32_t>("greedy_prompt");
  const auto expected = read_reference<std::int32_t>("greedy_tokens");
  for (std::size_t step = 0; step < expected.size(); ++step) {
    const auto output = model_.forward(tokens, 1, tokens.size());
    const auto last = output.logits.end() - 512;
    tokens.push_back(static_cast<std::int32_t>(std::max_element(last, output.logits.end()) - last));
  }
  EXPECT_EQ(std::vector<std::int32_t>(tokens.end() - expected.size(), tokens.end()), expected);
}

TEST_F(Runner, CachedDecodeGivesTheReferenceGreedyTokens) {
  const auto prompt = read_reference<std::int32_t>("greedy_prompt");
  EXPECT_EQ(model_.generate(prompt, 32), read_reference<std::int32_t>("greedy_tokens"));
}

TEST_F(Runner, CachedDecodeEqualsFullRecomputeWithSparseAttention) {
  // index_topk 8 < context: each step's indexer selects among cached keys.
  const RunOptions sparse{.index_topk = 8};
  std::vector<std::int32_t> tokens = read_reference<std::int32_t>("greedy_prompt");
  const auto cached = model_.generate(tokens, 16, std::nullopt, sparse);
  for (std::size_t step = 0; step < cached.size(); ++step) {
    const auto output = model_.forward(tokens, 1, tokens.size(), sparse);
    const auto last = output.logits.end() - 512;
    tokens.push_back(static_cast<std::int32_t>(std::max_element(last, output.logits.end()) - last));
  }
  EXPECT_EQ(std::vector<std::int32_t>(tokens.end() - cached.size(), tokens.end()), cached);
}

TEST_F(Runner, LayerByLayerEqualsAllAtOnceAndTokensAreChecked) {
  const auto output = model_.forward(input_ids_, 4, 64);
  auto hidden = model_.embed(input_ids_, 4, 64);
  for (std::uint64_t layer = 0; layer < 4; ++layer) model_.run_layer(layer, hidden, {});
  model_.final_norm(hidden);
  EXPECT_EQ(hidden.values, output.final_hidden.values);
  std::vector<std::int32_t> bad = {256, 512};
  EXPECT_EQ(testing::error_kind_of([&] { model_.embed(bad, 1, 2); }), "run.bad_token");
}

TEST(WeightLoader, DequantizesPackQuantizedInt4WithZeroPoints) {
  // N = 3 rows, K = 16, group 8, 4-bit asymmetric, packed by hand from the spec
  // (docs/formats/compressed-tensors.md, "pack-quantized").
  testing::ScratchDirectory scratch("pack-quantized");
  const std::uint64_t rows = 3, cols = 16, groups = 2;
  std::vector<std::int32_t> q(rows * cols), zero = {-3, 2, 0, 7, -8, 1};  // [rows, groups]
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = static_cast<std::int32_t>(i % 16) - 8;
  std::vector<std::uint32_t> packed(rows * 2, 0), zero_packed(1 * groups, 0);
  for (std::uint64_t n = 0; n < rows; ++n)
    for (std::uint64_t k = 0; k < cols; ++k)
      packed[n * 2 + k / 8] |= static_cast<std::uint32_t>(q[n * cols + k] + 8) << (4 * (k % 8));
  for (std::uint64_t n = 0; n < rows; ++n)
    for (std::uint64_t g = 0; g < groups; ++g)
      zero_packed[g] |= static_cast<std::uint32_t>(zero[n * groups + g] + 8) << (4 * n);
  std::vector<std::uint16_t> scales(rows * groups);
  for (std::size_t i = 0; i < scales.size(); ++i) scales[i] = f32_to_bf16(0.25f * (i + 1));
  const std::vector<std::int64_t> shape = {3, 16};
  const std::string m = "model.layers.0.mlp.down_proj";
  {
    SafetensorsWriter writer(scratch.path() / "model.safetensors",
                             {{m + ".weight_packed", DType::I32, {rows, 2}},
                              {m + ".weight_scale", DType::BF16, {rows, groups}},
                              {m + ".weight_shape", DType::I64, {2}},
                              {m + ".weight_zero_point", DType::I32, {1, groups}}});
    writer.write(std::as_bytes(std::span(packed)));
    writer.write(std::as_bytes(std::span(scales)));
    writer.write(std::as_bytes(std::span(shape)));
    writer.write(std::as_bytes(std::span(zero_packed)));
    writer.commit();
  }
  const auto checkpoint = Checkpoint::open(scratch.path());
  const auto matrix = WeightLoader(checkpoint).linear(m);
  ASSERT_EQ(matrix.rows, rows);
  ASSERT_EQ(matrix.cols, cols);
  for (std::uint64_t n = 0; n < rows; ++n)
    for (std::uint64_t k = 0; k < cols; ++k) {
      const std::uint64_t g = k / 8;
      EXPECT_EQ(matrix.values[n * cols + k],
                static_cast<float>(q[n * cols + k] - zero[n * groups + g]) *
                    bf16_to_f32(scales[n * groups + g]))
          << n << " " << k;
    }
}

TEST(RunnerCuda, CublasForwardMatchesTheReference) {
  const auto cuda = cuda_availability();
  if (!cuda.usable) GTEST_SKIP() << "no CUDA device: " << cuda.reason;
  const auto checkpoint = Checkpoint::open(kModel);
  const LanguageModel model(checkpoint, GemmDevice::Cuda);
  const auto input_ids = read_reference<std::int32_t>("input_ids");
  const auto output = model.forward(input_ids, 4, 64);
  const auto logits = compare(output.logits, read_reference<float>("logits"));
  EXPECT_LE(logits.max_abs, 2e-4);
  EXPECT_LE(logits.mean_abs, 5e-6);
  expect_same_argmax(output.logits, read_reference<float>("logits"), 512);
}

}  // namespace
}  // namespace qs::run
