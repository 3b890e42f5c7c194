// The swept codes' objective that GPTQ reports comes from the sweep itself: Σ e_j² over the
// scaled errors is tr(ΔW·H_λ·ΔWᵀ) for the damped Hessian, and the damping term comes off
// (gptq.h, swept_objective). Held here against the explicit quadratic form on random problems:
// integer and NVFP4 grids, natural and activation order, with and without dead columns,
// several damping fractions, and the CUDA sweeps where a GPU is present (skipped without one).

#include <gtest/gtest.h>

#include <cmath>
#include <initializer_list>
#include <span>
#include <random>
#include <vector>

#include "qs/ckpt/core/codecs.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/gptq.h"
#include "qs/quant/gptq_nvfp4.h"

namespace qs::gptq {
namespace {

// XᵀX of correlated inputs (low-rank part plus noise, a few large channels); `dead_block`
// ≥ 0 zeroes that 16-column block's inputs.
std::vector<double> second_moments(std::uint64_t k, std::uint64_t tokens, int dead_block,
                                   unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> mixing(6 * k);
  for (auto& value : mixing) value = normal(generator);
  std::vector<double> sums(k * k, 0.0), x(k);
  for (std::uint64_t t = 0; t < tokens; ++t) {
    double latent[6];
    for (double& value : latent) value = normal(generator);
    for (std::uint64_t i = 0; i < k; ++i) {
      x[i] = 0.4 * normal(generator);
      for (int l = 0; l < 6; ++l) x[i] += latent[l] * mixing[l * k + i];
      if (i % 29 == 5) x[i] *= 5.0;
      if (static_cast<int>(i / 16) == dead_block) x[i] = 0.0;
    }
    for (std::uint64_t i = 0; i < k; ++i)
      for (std::uint64_t j = 0; j < k; ++j) sums[i * k + j] += x[i] * x[j];
  }
  return sums;
}

std::vector<float> random_weight(std::uint64_t rows, std::uint64_t cols, unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> weight(rows * cols);
  for (auto& value : weight) value = bf16_to_f32(f32_to_bf16(normal(generator)));
  return weight;
}

// The explicit tr(ΔW·H·ΔWᵀ) / tr(W·H·Wᵀ) of what was written.
double explicit_relative_loss(const std::vector<float>& weight, const std::vector<float>& decoded,
                              std::uint64_t rows, std::uint64_t cols,
                              const PreparedHessian& prepared) {
  const auto objective = detail::objective_of_decoded(weight, decoded, rows, cols, prepared);
  return objective.error / objective.reference;
}

struct Case {
  std::uint64_t rows, cols;
  int dead_block;
  bool act_order;
  double damp;
};

const Case kCases[] = {{40, 256, -1, false, 0.01},
                       {40, 256, -1, true, 0.01},
                       {33, 320, 2, true, 0.01},  // 2.5 lazy blocks, a dead block
                       {33, 320, 2, false, 0.1},
                       {17, 192, 5, true, 0.001}};

// Relative: the f32 sweep against an f32 SGEMM. Seen: at most 7.5e-6, median 7e-7.
constexpr double kTolerance = 1e-4;

void check_integer_sweeps(std::initializer_list<Backend> backends) {
  for (const auto& c : kCases) {
    const auto h = second_moments(c.cols, 600, c.dead_block, 100 + c.rows);
    auto weight = random_weight(c.rows, c.cols, 7 + c.cols);
    Settings settings;
    settings.act_order = c.act_order;
    settings.damp = c.damp;
    const auto prepared = prepare_hessian(h, c.cols, 600, settings);
    ASSERT_TRUE(prepared.fallback.empty());
    EXPECT_GT(prepared.damping, 0.0);
    for (const intq::IntScheme scheme :
         {intq::IntScheme{{4, false}, 32, intq::Observer::MinMax},
          intq::IntScheme{{4, true}, 64, intq::Observer::MinMax},
          intq::IntScheme{{8, true}, intq::kChannel, intq::Observer::MinMax}}) {
      for (Backend backend : backends) {
        intq::IntQuantized out;
        const auto result =
            quantize(weight, c.rows, c.cols, DType::BF16, scheme, prepared, backend, out);
        std::vector<float> decoded(c.rows * c.cols);
        intq::dequantize(out, decoded);
        const double exact = explicit_relative_loss(weight, decoded, c.rows, c.cols, prepared);
        EXPECT_NEAR(result.relative_loss, exact, kTolerance * exact)
            << c.rows << "x" << c.cols << " dead " << c.dead_block << " act " << c.act_order
            << " damp " << c.damp << " bits " << scheme.format.bits << " cuda "
            << (backend == Backend::Cuda);
        EXPECT_LT(result.relative_loss, result.rtn_relative_loss);
      }
    }
  }
}

void check_nvfp4_sweeps(std::initializer_list<fp4::Backend> backends) {
  for (const auto& c : kCases) {
    const auto h = second_moments(c.cols, 600, c.dead_block, 200 + c.rows);
    const auto weight = random_weight(c.rows, c.cols, 9 + c.cols);
    Settings settings;
    settings.act_order = c.act_order;
    settings.damp = c.damp;
    settings.order_block = kNvfp4OrderBlock;
    const auto prepared = prepare_hessian(h, c.cols, 600, settings);
    ASSERT_TRUE(prepared.fallback.empty());
    const auto blocks = fp4::block_hessians(h, c.cols, c.damp);
    float amax = 0.0f;
    for (float value : weight) amax = std::max(amax, std::fabs(value));
    const float s2 = fp4::global_scale_for_amax(amax);
    for (auto method : {fp4::ScaleMethod::Max, fp4::ScaleMethod::Hessian}) {
      for (auto backend : backends) {
        std::vector<std::uint8_t> packed(c.rows * c.cols / 2),
            scales(c.rows * c.cols / fp4::kBlockSize);
        const auto result = quantize_nvfp4(
            weight, c.rows, c.cols, s2, method, prepared,
            method == fp4::ScaleMethod::Hessian ? &blocks : nullptr, backend, {packed, scales});
        std::vector<float> decoded(c.rows * c.cols);
        fp4::dequantize(packed, scales, s2, c.rows, c.cols, decoded);
        const double exact = explicit_relative_loss(weight, decoded, c.rows, c.cols, prepared);
        EXPECT_NEAR(result.relative_loss, exact, kTolerance * exact)
            << c.rows << "x" << c.cols << " dead " << c.dead_block << " act " << c.act_order
            << " damp " << c.damp << " method " << fp4::scale_method_name(method) << " backend "
            << static_cast<int>(backend);
      }
    }
  }
}

TEST(GptqObjective, IntegerSweepMatchesTheQuadraticForm) { check_integer_sweeps({Backend::Cpu}); }

TEST(GptqObjective, Nvfp4SweepMatchesTheQuadraticForm) {
  check_nvfp4_sweeps({fp4::Backend::Reference, fp4::Backend::Cpu});
}

// The GPU sweeps' sums, and round-to-nearest's objective through cuBLAS.
TEST(GptqObjective, CudaSweepsMatchTheQuadraticForm) {
  const auto cuda = cuda_availability();
  if (!cuda.usable) GTEST_SKIP() << "no CUDA device: " << cuda.reason;
  check_integer_sweeps({Backend::Cuda});
  check_nvfp4_sweeps({fp4::Backend::Cuda});
  const auto h = second_moments(256, 600, 3, 5);
  const auto weight = random_weight(40, 256, 6);
  const auto prepared = prepare_hessian(h, 256, 600, Settings{});
  const std::span<const float> forms[] = {weight};
  const double gpu = detail::quadratic_forms(forms, 40, 256, prepared, true)[0];
  const double cpu = detail::quadratic_form(weight, 40, 256, prepared);
  EXPECT_NEAR(gpu, cpu, 1e-5 * cpu);
}

TEST(GptqObjective, BaselineCanBeSkipped) {
  const auto h = second_moments(128, 400, -1, 3);
  const auto weight = random_weight(24, 128, 4);
  const auto prepared = prepare_hessian(h, 128, 400, Settings{});
  const intq::IntScheme scheme{{4, false}, 32, intq::Observer::MinMax};
  intq::IntQuantized with, without;
  const auto a = quantize(weight, 24, 128, DType::BF16, scheme, prepared, Backend::Cpu, with);
  const auto b =
      quantize(weight, 24, 128, DType::BF16, scheme, prepared, Backend::Cpu, without, false);
  EXPECT_TRUE(a.rtn_computed);
  EXPECT_FALSE(b.rtn_computed);
  EXPECT_GT(a.rtn_relative_loss, 0.0);
  EXPECT_EQ(b.rtn_relative_loss, 0.0);
  EXPECT_EQ(a.relative_loss, b.relative_loss);
  EXPECT_EQ(with.codes, without.codes);
  // Round-to-nearest written (too few tokens): its objective is the one reported, baseline or not.
  Settings strict;
  strict.min_tokens = 1000;
  const auto fallback = prepare_hessian(h, 128, 400, strict);
  const auto c =
      quantize(weight, 24, 128, DType::BF16, scheme, fallback, Backend::Cpu, without, false);
  EXPECT_TRUE(c.rtn_computed);
  EXPECT_GT(c.relative_loss, 0.0);
  EXPECT_EQ(c.relative_loss, c.rtn_relative_loss);
}

}  // namespace
}  // namespace qs::gptq
