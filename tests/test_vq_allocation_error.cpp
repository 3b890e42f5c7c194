// The allocator's per-tier error estimate (qs/quant/vq_allocation_error.h): the layer objective
// of a plain nearest-codeword encode, or of the job's compensated, gain-corrected encode, on
// sampled rows scaled to the matrix, × frequency.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "qs/ckpt/core/error.h"
#include "qs/quant/vq_allocation_error.h"
#include "qs/quant/vq_gain_correction.h"

namespace qs {
namespace {

struct Layer {
  std::uint64_t rows = 0, cols = 0;
  std::vector<float> weight;
  std::vector<double> hessian;  // XᵀX of random correlated inputs
};

Layer random_layer(std::uint64_t rows, std::uint64_t cols, std::uint64_t seed) {
  std::mt19937_64 random(seed);
  std::normal_distribution<float> normal;
  Layer layer{rows, cols, std::vector<float>(rows * cols), std::vector<double>(cols * cols)};
  for (auto& w : layer.weight) w = 0.02f * normal(random);
  const std::uint64_t tokens = 2 * cols;
  std::vector<double> x(tokens * cols);
  for (std::uint64_t t = 0; t < tokens; ++t) {
    const double shared = normal(random);
    for (std::uint64_t c = 0; c < cols; ++c)
      x[t * cols + c] = normal(random) * (1.0 + static_cast<double>(c % 7)) + 0.5 * shared;
  }
  for (std::uint64_t i = 0; i < cols; ++i)
    for (std::uint64_t j = 0; j < cols; ++j) {
      double sum = 0.0;
      for (std::uint64_t t = 0; t < tokens; ++t) sum += x[t * cols + i] * x[t * cols + j];
      layer.hessian[i * cols + j] = sum;
    }
  return layer;
}

// tr(ΔW_S·H·ΔW_Sᵀ) over the rows `picked` of the plain encode, by plain loops.
double objective_of_rows(const Layer& layer, const vq::Codebook& codebook,
                         const std::vector<std::uint64_t>& picked) {
  vq::EncodeSettings plain;
  plain.compensate = false;
  vq::VqQuantized quantized;
  vq::encode(layer.weight, layer.rows, layer.cols, DType::BF16, codebook, nullptr, plain,
             vq::Backend::Reference, quantized);
  std::vector<float> decoded(layer.rows * layer.cols);
  vq::decode(quantized, codebook, decoded);
  double total = 0.0;
  for (const auto r : picked)
    for (std::uint64_t i = 0; i < layer.cols; ++i)
      for (std::uint64_t j = 0; j < layer.cols; ++j)
        total +=
            (static_cast<double>(layer.weight[r * layer.cols + i]) - decoded[r * layer.cols + i]) *
            layer.hessian[i * layer.cols + j] *
            (static_cast<double>(layer.weight[r * layer.cols + j]) - decoded[r * layer.cols + j]);
  return total;
}

vq::Codebook uniform(const char* name) { return vq::uniform_codebook(*preset_vq_tier(name)); }

TEST(VqAllocationError, IsTheObjectiveOfTheNearestCodewordEncode) {
  const auto layer = random_layer(12, 256, 1);
  const auto codebook = uniform("int2");
  std::vector<std::uint64_t> all(layer.rows);
  for (std::uint64_t r = 0; r < layer.rows; ++r) all[r] = r;
  const double expected = objective_of_rows(layer, codebook, all);
  EXPECT_GT(expected, 0.0);
  const double estimate = vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16,
                                               codebook, layer.hessian, {});
  EXPECT_NEAR(estimate, expected, 1e-9 * expected);
  vq::AllocationErrorSettings weighted;
  weighted.frequency = 2.5;
  EXPECT_NEAR(vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16, codebook,
                                   layer.hessian, weighted),
              2.5 * expected, 1e-9 * expected);
}

TEST(VqAllocationError, ScalesASampleOfRowsToTheMatrix) {
  const auto layer = random_layer(40, 128, 2);
  const auto codebook = uniform("int1");
  vq::AllocationErrorSettings settings;
  settings.sample_rows = 10;
  settings.seed = 77;
  const auto picked = vq::sample_rows(layer.rows, 10, 77);
  const double expected = objective_of_rows(layer, codebook, picked) * 40.0 / 10.0;
  EXPECT_NEAR(vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16, codebook,
                                   layer.hessian, settings),
              expected, 1e-9 * expected);
}

TEST(VqAllocationError, SamplesDistinctSortedRowsDeterministically) {
  const auto a = vq::sample_rows(1000, 50, 5);
  EXPECT_EQ(a.size(), 50u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::adjacent_find(a.begin(), a.end()), a.end());
  EXPECT_LT(a.back(), 1000u);
  EXPECT_EQ(vq::sample_rows(1000, 50, 5), a);
  EXPECT_NE(vq::sample_rows(1000, 50, 6), a);
  EXPECT_EQ(vq::sample_rows(7, 50, 5), (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5, 6}));
}

TEST(VqAllocationError, FallsWithMoreBits) {
  const auto layer = random_layer(16, 128, 3);
  double previous = INFINITY;
  for (const char* tier : {"int1", "int2", "int3"}) {
    const double error = vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16,
                                              uniform(tier), layer.hessian, {});
    EXPECT_LT(error, previous) << tier;
    previous = error;
  }
}

TEST(VqAllocationError, RefusesAHessianOfTheWrongSize) {
  const auto layer = random_layer(4, 128, 4);
  const std::vector<double> small(64 * 64, 1.0);
  try {
    vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16, uniform("int2"), small,
                         {});
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "vq.shape");
  }
}

// The job's prepared Hessian for a tier of vector length d (act order moves whole vectors).
gptq::PreparedHessian prepared_for(const Layer& layer, std::uint32_t d) {
  gptq::Settings settings;
  settings.order_block = d;
  return gptq::prepare_hessian(layer.hessian, layer.cols, 2 * layer.cols, settings);
}

// tr(ΔW·H·ΔWᵀ) of an encoded matrix against `weight`, by plain loops.
double objective_of(const Layer& layer, std::span<const float> weight, std::uint64_t rows,
                    const vq::VqQuantized& quantized, const vq::Codebook& codebook) {
  std::vector<float> decoded(rows * layer.cols);
  vq::decode(quantized, codebook, decoded);
  double total = 0.0;
  for (std::uint64_t r = 0; r < rows; ++r)
    for (std::uint64_t i = 0; i < layer.cols; ++i)
      for (std::uint64_t j = 0; j < layer.cols; ++j)
        total += (static_cast<double>(weight[r * layer.cols + i]) - decoded[r * layer.cols + i]) *
                 layer.hessian[i * layer.cols + j] *
                 (static_cast<double>(weight[r * layer.cols + j]) - decoded[r * layer.cols + j]);
  return total;
}

vq::AllocationErrorSettings as_written() {
  vq::AllocationErrorSettings settings;
  settings.encode = vq::EncodeSettings{};  // GPTQ-VQ, Mahalanobis, exact update
  settings.correct_gain = true;
  return settings;
}

TEST(VqAllocationError, IsTheObjectiveOfTheCompensatedGainCorrectedEncode) {
  const auto layer = random_layer(12, 256, 5);
  const auto codebook = uniform("int1");
  const auto prepared = prepared_for(layer, 1);
  // The job's encode of the whole matrix (the reference backend), then its gain correction.
  vq::VqQuantized quantized;
  vq::encode(layer.weight, layer.rows, layer.cols, DType::BF16, codebook, &prepared,
             vq::EncodeSettings{}, vq::Backend::Reference, quantized);
  const auto correction = vq::correct_output_gain(layer.weight, codebook, prepared, quantized);
  EXPECT_NE(correction.factor, 1.0);
  const double expected = objective_of(layer, layer.weight, layer.rows, quantized, codebook);
  const double estimate =
      vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16, codebook,
                           layer.hessian, as_written(), vq::Backend::Cpu, &prepared);
  EXPECT_NEAR(estimate, expected, 1e-9 * expected);
  // Not the plain encode's objective (for a sign code with a gain-corrected scale it is even
  // higher: why the job corrects only learned tiers).
  const double plain = vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16,
                                            codebook, layer.hessian, {});
  EXPECT_GT(std::abs(plain - estimate), 0.01 * expected);
  // Without the gain correction: the compensated encode's own objective.
  auto uncorrected = as_written();
  uncorrected.correct_gain = false;
  vq::VqQuantized compensated;
  vq::encode(layer.weight, layer.rows, layer.cols, DType::BF16, codebook, &prepared,
             vq::EncodeSettings{}, vq::Backend::Reference, compensated);
  const double compensated_objective =
      objective_of(layer, layer.weight, layer.rows, compensated, codebook);
  EXPECT_NEAR(vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16, codebook,
                                   layer.hessian, uncorrected, vq::Backend::Cpu, &prepared),
              compensated_objective, 1e-9 * compensated_objective);
}

TEST(VqAllocationError, CompensatedSampleRowsAreThoseOfTheWholeEncode) {
  // GPTQ feeds errors along a row's columns, never across rows: the sampled rows' codes are
  // the whole matrix's. (Without the gain correction, whose factor is the sample's own.)
  const auto layer = random_layer(30, 128, 6);
  const auto codebook = uniform("int2");
  const auto prepared = prepared_for(layer, 1);
  auto settings = as_written();
  settings.correct_gain = false;
  settings.sample_rows = 7;
  settings.seed = 11;
  vq::VqQuantized whole;
  vq::encode(layer.weight, layer.rows, layer.cols, DType::BF16, codebook, &prepared,
             vq::EncodeSettings{}, vq::Backend::Reference, whole);
  std::vector<float> decoded(layer.rows * layer.cols);
  vq::decode(whole, codebook, decoded);
  double expected = 0.0;
  for (const auto r : vq::sample_rows(layer.rows, 7, 11))
    for (std::uint64_t i = 0; i < layer.cols; ++i)
      for (std::uint64_t j = 0; j < layer.cols; ++j)
        expected += (static_cast<double>(layer.weight[r * layer.cols + i]) -
                     decoded[r * layer.cols + i]) *
                    layer.hessian[i * layer.cols + j] *
                    (static_cast<double>(layer.weight[r * layer.cols + j]) -
                     decoded[r * layer.cols + j]);
  expected *= 30.0 / 7.0;
  EXPECT_NEAR(vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16, codebook,
                                   layer.hessian, settings, vq::Backend::Cpu, &prepared),
              expected, 1e-9 * expected);
}

TEST(VqAllocationError, WithoutAUsablePreparedHessianIsThePlainEncode) {
  // No prepared Hessian, or one that fell back (the job then encodes plainly, uncorrected).
  const auto layer = random_layer(8, 128, 7);
  const auto codebook = uniform("int1");
  const double plain = vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16,
                                            codebook, layer.hessian, {});
  EXPECT_EQ(vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16, codebook,
                                 layer.hessian, as_written()),
            plain);
  auto fallen = prepared_for(layer, 1);
  fallen.fallback = "too few tokens";
  EXPECT_EQ(vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16, codebook,
                                 layer.hessian, as_written(), vq::Backend::Cpu, &fallen),
            plain);
}

TEST(VqAllocationError, CompensatedIsDeterministicAndFallsWithMoreBits) {
  const auto layer = random_layer(16, 128, 8);
  const auto prepared = prepared_for(layer, 1);
  double previous = INFINITY;
  for (const char* tier : {"int1", "int2", "int3"}) {
    const double error =
        vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16, uniform(tier),
                             layer.hessian, as_written(), vq::Backend::Cpu, &prepared);
    EXPECT_EQ(error, vq::allocation_error(layer.weight, layer.rows, layer.cols, DType::BF16,
                                          uniform(tier), layer.hessian, as_written(),
                                          vq::Backend::Cpu, &prepared));
    EXPECT_LT(error, previous) << tier;
    previous = error;
  }
}

}  // namespace
}  // namespace qs
