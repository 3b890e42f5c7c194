// The output-gain correction of VQ scales (qs/quant/vq_gain_correction.h).

#include <gtest/gtest.h>

#include <random>

#include "qs/ckpt/core/error.h"
#include "qs/quant/vq_gain_correction.h"

namespace qs {
namespace {

constexpr std::uint64_t kRows = 24, kCols = 256;

struct Layer {
  std::vector<float> weight;
  gptq::PreparedHessian hessian;
};

Layer random_layer(std::uint64_t seed) {
  std::mt19937_64 random(seed);
  std::normal_distribution<float> normal;
  Layer layer;
  layer.weight.resize(kRows * kCols);
  for (auto& w : layer.weight) w = 0.02f * normal(random);
  for (std::uint64_t c = 0; c < kCols; ++c) layer.weight[5 * kCols + c] = 0.0f;  // a zero row
  const std::uint64_t tokens = 2 * kCols;
  std::vector<double> x(tokens * kCols), h(kCols * kCols, 0.0);
  for (std::uint64_t t = 0; t < tokens; ++t) {
    const double shared = normal(random);
    for (std::uint64_t c = 0; c < kCols; ++c)
      x[t * kCols + c] = normal(random) * (1.0 + static_cast<double>(c % 5)) + 0.7 * shared;
  }
  for (std::uint64_t t = 0; t < tokens; ++t)
    for (std::uint64_t i = 0; i < kCols; ++i)
      for (std::uint64_t j = 0; j < kCols; ++j)
        h[i * kCols + j] += x[t * kCols + i] * x[t * kCols + j];
  layer.hessian = gptq::prepare_hessian(h, kCols, tokens, {});
  return layer;
}

double gain(const Layer& layer, const vq::VqQuantized& quantized, const vq::Codebook& codebook) {
  std::vector<float> decoded(kRows * kCols);
  vq::decode(quantized, codebook, decoded);
  const auto o =
      gptq::detail::objective_of_decoded(layer.weight, decoded, kRows, kCols, layer.hessian);
  const double energy = gptq::detail::quadratic_form(decoded, kRows, kCols, layer.hessian);
  return (o.reference + energy - o.error) / 2.0 / o.reference;
}

TEST(VqGainCorrection, BringsTheOutputGainOfCompensatedOneBitCodesToOne) {
  const auto layer = random_layer(1);
  const auto codebook = vq::uniform_codebook(*preset_vq_tier("int1"));
  vq::VqQuantized quantized;
  vq::encode(layer.weight, kRows, kCols, DType::BF16, codebook, &layer.hessian, {},
             vq::Backend::Cpu, quantized);
  const double before = gain(layer, quantized, codebook);
  const auto codes = quantized.codes;
  auto scales = quantized.scales;
  const auto correction = vq::correct_output_gain(layer.weight, codebook, layer.hessian, quantized);
  EXPECT_NEAR(correction.gain, before, 1e-9);
  EXPECT_LT(correction.gain, 0.95);  // 1-bit codes under compensation shrink the output
  EXPECT_NEAR(correction.factor, 1.0 / correction.gain, 1e-12);
  EXPECT_NEAR(gain(layer, quantized, codebook), 1.0, 0.005);  // BF16 scales: not exactly 1
  EXPECT_EQ(quantized.codes, codes);
  for (std::size_t i = 0; i < scales.size(); ++i) {
    if (scales[i] == 0.0f) {
      EXPECT_EQ(quantized.scales[i], 0.0f);
    } else {
      EXPECT_NEAR(quantized.scales[i] / scales[i], correction.factor, correction.factor / 128);
    }
  }
  // The zero row had a zero scale to begin with.
  EXPECT_EQ(scales[5 * 2], 0.0f);
}

TEST(VqGainCorrection, LeavesAnAllZeroModuleAlone) {
  auto layer = random_layer(2);
  std::fill(layer.weight.begin(), layer.weight.end(), 0.0f);
  const auto codebook = vq::uniform_codebook(*preset_vq_tier("int2"));
  vq::VqQuantized quantized;
  vq::encode(layer.weight, kRows, kCols, DType::BF16, codebook, &layer.hessian, {},
             vq::Backend::Cpu, quantized);
  const auto scales = quantized.scales;
  const auto correction = vq::correct_output_gain(layer.weight, codebook, layer.hessian, quantized);
  EXPECT_EQ(correction.factor, 1.0);
  EXPECT_EQ(quantized.scales, scales);
}

TEST(VqGainCorrection, RefusesMismatchedShapes) {
  const auto layer = random_layer(3);
  const auto codebook = vq::uniform_codebook(*preset_vq_tier("int2"));
  vq::VqQuantized quantized;
  vq::encode(layer.weight, kRows, kCols, DType::BF16, codebook, &layer.hessian, {},
             vq::Backend::Cpu, quantized);
  const std::vector<float> short_weight(kCols);
  try {
    vq::correct_output_gain(short_weight, codebook, layer.hessian, quantized);
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "vq.shape");
  }
}

}  // namespace
}  // namespace qs
