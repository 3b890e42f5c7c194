// GPTQ: the inverse-Hessian factor, the documented fallbacks (dead columns, damping retries,
// RTN when Cholesky or calibration fails, NaN statistics), and that the sweep lowers the
// layer objective ‖ΔW·X‖² well below round-to-nearest on correlated inputs.

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "correlated_inputs.h"
#include "qs/ckpt/core/error.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/gptq.h"

namespace qs::gptq {
namespace {

using testing::correlated_second_moments;

std::vector<float> random_weight(std::uint64_t rows, std::uint64_t cols, unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> weight(rows * cols);
  for (auto& value : weight) value = bf16_to_f32(f32_to_bf16(normal(generator)));
  return weight;
}

intq::IntScheme scheme(int bits, bool symmetric, std::int64_t group) {
  return {{bits, symmetric}, group, intq::Observer::MinMax};
}

TEST(Gptq, FactorInvertsTheDampedHessian) {
  const std::uint64_t k = 48;
  const auto h = correlated_second_moments(k, 200, 1);
  Settings settings;
  settings.act_order = false;
  const auto prepared = prepare_hessian(h, k, 200, settings);
  ASSERT_TRUE(prepared.fallback.empty());
  double mean = 0.0;
  for (std::uint64_t i = 0; i < k; ++i) mean += h[i * k + i] / k;
  // (UᵀU)·(H + λI) = I, U upper triangular with a positive diagonal (so it is the unique
  // Cholesky factor the three-step potrf/potri/potrf route would give).
  for (std::uint64_t i = 0; i < k; ++i) {
    EXPECT_GT(prepared.u[i * k + i], 0.0f);
    for (std::uint64_t j = 0; j < i; ++j) EXPECT_EQ(prepared.u[i * k + j], 0.0f);
  }
  double worst = 0.0;
  for (std::uint64_t i = 0; i < k; ++i)
    for (std::uint64_t j = 0; j < k; ++j) {
      double product = 0.0;
      for (std::uint64_t m = 0; m < k; ++m) {
        double inverse = 0.0;  // (UᵀU)[i, m]
        for (std::uint64_t l = 0; l <= std::min(i, m); ++l)
          inverse += static_cast<double>(prepared.u[l * k + i]) * prepared.u[l * k + m];
        product += inverse * (h[m * k + j] + (m == j ? 0.01 * mean : 0.0));
      }
      worst = std::max(worst, std::fabs(product - (i == j ? 1.0 : 0.0)));
    }
  EXPECT_LT(worst, 1e-4);
}

TEST(Gptq, BeatsRoundToNearestOnCorrelatedInputs) {
  const std::uint64_t rows = 64, k = 256;
  const auto h = correlated_second_moments(k, 1024, 2);
  const auto weight = random_weight(rows, k, 3);
  for (const auto& s : {scheme(4, false, 128), scheme(4, false, 32), scheme(8, true, 128),
                        scheme(4, true, intq::kChannel)}) {
    for (bool act_order : {false, true}) {
      Settings settings;
      settings.act_order = act_order;
      const auto prepared = prepare_hessian(h, k, 1024, settings);
      intq::IntQuantized out;
      const auto result = quantize(weight, rows, k, DType::BF16, s, prepared, Backend::Cpu, out);
      EXPECT_TRUE(result.fallback.empty());
      EXPECT_LT(result.relative_loss, 0.7 * result.rtn_relative_loss)
          << s.format.bits << " bits, group " << s.group_size << ", act_order " << act_order;
      for (auto code : out.codes) {
        EXPECT_GE(code, s.format.q_min());
        EXPECT_LE(code, s.format.q_max());
      }
    }
  }
}

TEST(Gptq, IdentityHessianIsRoundToNearest) {
  const std::uint64_t rows = 16, k = 128;
  std::vector<double> identity(k * k, 0.0);
  for (std::uint64_t i = 0; i < k; ++i) identity[i * k + i] = 1.0;
  Settings settings;
  settings.damp = 0.0;
  const auto prepared = prepare_hessian(identity, k, 10, settings);
  const auto weight = random_weight(rows, k, 4);
  intq::IntQuantized out;
  const auto s = scheme(4, false, 32);
  quantize(weight, rows, k, DType::BF16, s, prepared, Backend::Cpu, out);
  for (std::uint64_t r = 0; r < rows; ++r)
    for (std::uint64_t c = 0; c < k; ++c)
      EXPECT_EQ(out.codes[r * k + c],
                intq::quantize_value(weight[r * k + c], out.params(r, c / 32), s.format, DType::F32));
}

TEST(Gptq, DeadColumnsAreZeroed) {
  const std::uint64_t rows = 8, k = 64;
  auto h = correlated_second_moments(k, 100, 5);
  for (std::uint64_t j = 0; j < k; ++j) h[10 * k + j] = h[j * k + 10] = 0.0;  // input 10 is 0
  const auto prepared = prepare_hessian(h, k, 100, Settings{});
  ASSERT_TRUE(prepared.fallback.empty());
  EXPECT_TRUE(prepared.dead[10]);
  auto weight = random_weight(rows, k, 6);
  intq::IntQuantized out;
  quantize(weight, rows, k, DType::BF16, scheme(4, false, 32), prepared, Backend::Cpu, out);
  for (std::uint64_t r = 0; r < rows; ++r) EXPECT_EQ(out.codes[r * k + 10], out.params(r, 0).zero);
}

TEST(Gptq, DampingRetriesThenFallsBackToRoundToNearest) {
  const std::uint64_t k = 32;
  // Rank one: singular without damping; the ladder finds a damping that factors.
  std::vector<double> rank_one(k * k);
  for (std::uint64_t i = 0; i < k; ++i)
    for (std::uint64_t j = 0; j < k; ++j) rank_one[i * k + j] = (1.0 + i) * (1.0 + j);
  Settings settings;
  settings.damp = 0.0;
  const auto retried = prepare_hessian(rank_one, k, 10, settings);
  EXPECT_TRUE(retried.fallback.empty());
  EXPECT_GT(retried.damp_used, 0.0);
  // Strongly indefinite: no damping up to 1.0 helps; round-to-nearest with a reason.
  std::vector<double> indefinite(k * k, 0.0);
  for (std::uint64_t i = 0; i < k; ++i) indefinite[i * k + i] = i == 0 ? -1000.0 : 1.0;
  const auto failed = prepare_hessian(indefinite, k, 10, Settings{});
  EXPECT_NE(failed.fallback.find("not positive definite"), std::string::npos);
  const auto weight = random_weight(4, k, 7);
  intq::IntQuantized out;
  const auto result =
      quantize(weight, 4, k, DType::BF16, scheme(4, false, 32), failed, Backend::Cpu, out);
  EXPECT_FALSE(result.fallback.empty());
  EXPECT_EQ(result.relative_loss, result.rtn_relative_loss);
}

TEST(Gptq, TooFewTokensFallBack) {
  const auto h = correlated_second_moments(16, 5, 8);
  Settings settings;
  settings.min_tokens = 100;
  EXPECT_NE(prepare_hessian(h, 16, 5, settings).fallback.find("5 token rows"), std::string::npos);
  EXPECT_FALSE(prepare_hessian(std::vector<double>(256, 0.0), 16, 0, Settings{}).fallback.empty());
}

TEST(Gptq, NonFiniteStatisticsAreAnError) {
  auto h = correlated_second_moments(16, 20, 9);
  h[17] = std::nan("");
  try {
    prepare_hessian(h, 16, 20, Settings{});
    FAIL() << "expected calibration.non_finite";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "calibration.non_finite");
  }
}

TEST(Gptq, CudaMatchesCpu) {
  const auto cuda = cuda_availability();
  if (!cuda.usable) GTEST_SKIP() << "no CUDA device: " << cuda.reason;
  const std::uint64_t rows = 300, k = 384;
  const auto h = correlated_second_moments(k, 2000, 10);
  const auto weight = random_weight(rows, k, 11);
  const auto cpu_prepared = prepare_hessian(h, k, 2000, Settings{}, Backend::Cpu);
  const auto gpu_prepared = prepare_hessian(h, k, 2000, Settings{}, Backend::Cuda);
  double worst = 0.0;
  for (std::size_t i = 0; i < cpu_prepared.u.size(); ++i)
    worst = std::max(worst, static_cast<double>(std::fabs(cpu_prepared.u[i] - gpu_prepared.u[i]) /
                                                (std::fabs(cpu_prepared.u[i]) + 1e-3f)));
  EXPECT_LT(worst, 1e-4);
  intq::IntQuantized cpu, gpu;
  const auto s = scheme(4, false, 128);
  const auto a = quantize(weight, rows, k, DType::BF16, s, cpu_prepared, Backend::Cpu, cpu);
  const auto b = quantize(weight, rows, k, DType::BF16, s, cpu_prepared, Backend::Cuda, gpu);
  std::uint64_t differing = 0;
  for (std::size_t i = 0; i < cpu.codes.size(); ++i) differing += cpu.codes[i] != gpu.codes[i];
  // Different GEMM summation orders move a few codes across rounding boundaries, no more.
  EXPECT_LT(differing, cpu.codes.size() / 1000);
  EXPECT_NEAR(b.relative_loss, a.relative_loss, 0.01 * a.relative_loss);
}

}  // namespace
}  // namespace qs::gptq
