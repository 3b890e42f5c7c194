// GPTQ-VQ encode (qs/quant/vq.h): the CPU sweep held to the reference bit for bit at several
// thread counts in every mode; what compensation must and must not do (nothing on uncorrelated
// inputs, a lower layer objective on correlated ones, exact no worse than GPTVQ's diagonal
// update, both the same at d = 1); the least-squares scale refit (jointly per row in H's metric,
// per group without a Hessian; singular rows, zero groups); hard values (zero groups, −0.0,
// subnormal scales, NaN/Inf refused, dead columns); shape errors; the GPU against the host.

#include <gtest/gtest.h>
#include <tbb/task_arena.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "correlated_inputs.h"
#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/int_group.h"
#include "qs/quant/vq.h"
#include "test_support.h"

namespace qs::vq {
namespace {

using testing::error_kind_of;

// A codebook of K Gaussian codewords (unit variance, as scale-normalised vectors are), rounded to
// F16 as every codebook is.
Codebook random_codebook(std::uint32_t d, std::uint32_t k, unsigned seed) {
  Codebook codebook;
  codebook.tier = VqTier{"test", d, k, VqCodebookKind::Learned};
  codebook.dtype = DType::F16;
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  codebook.codewords.resize(std::uint64_t{k} * d);
  for (auto& value : codebook.codewords) value = f16_to_f32(f32_to_f16(normal(generator)));
  return codebook;
}

std::vector<float> random_weight(std::uint64_t rows, std::uint64_t cols, unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> weight(rows * cols);
  for (auto& value : weight) value = bf16_to_f32(f32_to_bf16(normal(generator)));
  return weight;
}

gptq::PreparedHessian prepared(const std::vector<double>& h, std::uint64_t cols, std::uint32_t d,
                               bool act_order, double damp = 0.01) {
  gptq::Settings settings;
  settings.act_order = act_order;
  settings.order_block = d;
  settings.damp = damp;
  return gptq::prepare_hessian(h, cols, 1000, settings);
}

// The decode of the layout, written out here independently of the library's.
std::vector<float> decoded(const VqQuantized& q, const Codebook& codebook) {
  const std::uint32_t d = codebook.tier.d;
  std::vector<float> out(q.rows * q.cols);
  for (std::uint64_t r = 0; r < q.rows; ++r)
    for (std::uint64_t c = 0; c < q.cols; ++c)
      out[r * q.cols + c] = codebook.codewords[q.codes[r * (q.cols / d) + c / d] * d + c % d] *
                            q.scales[r * (q.cols / 128) + c / 128];
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Encoded {
  VqQuantized quantized;
  std::vector<float> swept;
  EncodeResult result;
};

Encoded run(const std::vector<float>& weight, std::uint64_t rows, std::uint64_t cols,
            const Codebook& codebook, const gptq::PreparedHessian* hessian,
            const EncodeSettings& settings, Backend backend) {
  Encoded encoded;
  encoded.swept.resize(rows * cols);
  encoded.result = encode(weight, rows, cols, DType::BF16, codebook, hessian, settings, backend,
                          encoded.quantized, encoded.swept);
  return encoded;
}

struct Case {
  std::uint32_t d;
  std::uint32_t k;
};

TEST(VqEncode, CpuMatchesReferenceBitForBitInEveryMode) {
  const std::uint64_t rows = 14, cols = 256;  // the CPU's batches of four rows and a partial one
  const auto h = testing::correlated_second_moments(cols, 600, 3, testing::DeadBlock::Yes);
  auto weight = random_weight(rows, cols, 5);
  // A zero group, a −0.0 group and a tie-prone row of equal values.
  for (std::uint64_t c = 128; c < 256; ++c) weight[1 * cols + c] = 0.0f;
  for (std::uint64_t c = 0; c < 128; ++c) weight[2 * cols + c] = -0.0f;
  for (std::uint64_t c = 0; c < cols; ++c) weight[3 * cols + c] = 0.015625f;
  // K 12: the vectorised search's whole lane groups and its in-order tail.
  for (const Case shape : {Case{1, 4}, Case{4, 12}, Case{4, 256}, Case{8, 256}}) {
    const auto codebook = random_codebook(shape.d, shape.k, 11 + shape.d);
    for (bool act_order : {false, true}) {
      const auto hessian = prepared(h, cols, shape.d, act_order);
      ASSERT_TRUE(hessian.fallback.empty());
      for (bool compensate : {true, false})
        for (auto update : {ErrorUpdate::Exact, ErrorUpdate::Diagonal})
          for (auto metric : {Metric::Mahalanobis, Metric::Euclidean})
            for (auto rule : {ScaleRule::Rms, ScaleRule::LeastSquares}) {
              if (!compensate && (update != ErrorUpdate::Exact || metric != Metric::Mahalanobis))
                continue;  // without feedback the update and metric play no part
              const EncodeSettings settings{compensate, metric, update, rule};
              const auto reference =
                  run(weight, rows, cols, codebook, &hessian, settings, Backend::Reference);
              for (int threads : {1, 2, 3}) {
                tbb::task_arena arena(threads);
                Encoded fast;
                arena.execute([&] {
                  fast = run(weight, rows, cols, codebook, &hessian, settings, Backend::Cpu);
                });
                const std::string what =
                    "d " + std::to_string(shape.d) + " act_order " + std::to_string(act_order) +
                    " compensate " + std::to_string(compensate) + " update " +
                    std::to_string(static_cast<int>(update)) + " metric " +
                    std::to_string(static_cast<int>(metric)) + " rule " +
                    std::to_string(static_cast<int>(rule)) + " threads " + std::to_string(threads);
                EXPECT_EQ(fast.quantized.codes, reference.quantized.codes) << what;
                EXPECT_TRUE(same_bits(fast.quantized.scales, reference.quantized.scales)) << what;
                EXPECT_TRUE(same_bits(fast.swept, reference.swept)) << what;
                EXPECT_EQ(fast.result.relative_loss, reference.result.relative_loss) << what;
                EXPECT_EQ(fast.result.energy.error, reference.result.energy.error) << what;
              }
            }
    }
  }
}

// H = 4·I without damping: U = I/2 has no off-diagonal part, so no error reaches another column,
// and the Mahalanobis metric is 4·I, a power of two times the Euclidean cost: compensated codes
// are exactly the nearest codewords, in every mode.
TEST(VqEncode, UncorrelatedInputsGiveTheNearestCodewords) {
  const std::uint64_t rows = 16, cols = 256;
  std::vector<double> h(cols * cols, 0.0);
  for (std::uint64_t i = 0; i < cols; ++i) h[i * cols + i] = 4.0;
  const auto weight = random_weight(rows, cols, 7);
  for (const Case shape : {Case{1, 8}, Case{4, 256}, Case{8, 256}}) {
    const auto codebook = random_codebook(shape.d, shape.k, 21);
    const auto hessian = prepared(h, cols, shape.d, true, 0.0);
    ASSERT_TRUE(hessian.fallback.empty());
    EncodeSettings nearest_settings;
    nearest_settings.compensate = false;
    const auto nearest = run(weight, rows, cols, codebook, nullptr, nearest_settings, Backend::Cpu);
    for (auto update : {ErrorUpdate::Exact, ErrorUpdate::Diagonal})
      for (auto metric : {Metric::Mahalanobis, Metric::Euclidean}) {
        const auto compensated = run(weight, rows, cols, codebook, &hessian,
                                     {true, metric, update, ScaleRule::Rms}, Backend::Cpu);
        EXPECT_EQ(compensated.quantized.codes, nearest.quantized.codes) << shape.d;
        EXPECT_TRUE(same_bits(compensated.quantized.scales, nearest.quantized.scales));
        EXPECT_TRUE(same_bits(compensated.swept, weight));
      }
    EXPECT_TRUE(same_bits(nearest.swept, weight));  // no feedback: the targets are the source
  }
}

TEST(VqEncode, ExactAndDiagonalUpdatesAgreeAtDimensionOne) {
  const std::uint64_t rows = 16, cols = 384;
  const auto h = testing::correlated_second_moments(cols, 800, 9);
  const auto weight = random_weight(rows, cols, 13);
  const auto codebook = random_codebook(1, 4, 17);
  for (bool act_order : {false, true}) {
    const auto hessian = prepared(h, cols, 1, act_order);
    for (auto metric : {Metric::Mahalanobis, Metric::Euclidean}) {
      const auto exact = run(weight, rows, cols, codebook, &hessian,
                             {true, metric, ErrorUpdate::Exact, ScaleRule::Rms}, Backend::Cpu);
      const auto diagonal =
          run(weight, rows, cols, codebook, &hessian,
              {true, metric, ErrorUpdate::Diagonal, ScaleRule::Rms}, Backend::Cpu);
      EXPECT_EQ(exact.quantized.codes, diagonal.quantized.codes);
      EXPECT_TRUE(same_bits(exact.quantized.scales, diagonal.quantized.scales));
      EXPECT_TRUE(same_bits(exact.swept, diagonal.swept));
      // One from the sweep's errors, one from the decoded matrix: the same objective.
      EXPECT_NEAR(exact.result.relative_loss, diagonal.result.relative_loss,
                  1e-3 * diagonal.result.relative_loss);
    }
  }
}

TEST(VqEncode, CompensationLowersTheObjectiveAndExactBeatsDiagonal) {
  const std::uint64_t rows = 32, cols = 512;
  double exact_sum = 0.0, diagonal_sum = 0.0;
  for (unsigned seed = 0; seed < 4; ++seed) {
    const auto h = testing::correlated_second_moments(cols, 1500, 40 + seed);
    const auto weight = random_weight(rows, cols, 50 + seed);
    const auto codebook = random_codebook(4, 256, 60 + seed);
    for (bool act_order : {false, true}) {
      const auto hessian = prepared(h, cols, 4, act_order);
      EncodeSettings plain;
      plain.compensate = false;
      const auto nearest = run(weight, rows, cols, codebook, &hessian, plain, Backend::Cpu);
      const auto exact =
          run(weight, rows, cols, codebook, &hessian,
              {true, Metric::Mahalanobis, ErrorUpdate::Exact, ScaleRule::Rms}, Backend::Cpu);
      const auto diagonal =
          run(weight, rows, cols, codebook, &hessian,
              {true, Metric::Mahalanobis, ErrorUpdate::Diagonal, ScaleRule::Rms}, Backend::Cpu);
      const auto euclidean =
          run(weight, rows, cols, codebook, &hessian,
              {true, Metric::Euclidean, ErrorUpdate::Exact, ScaleRule::Rms}, Backend::Cpu);
      EXPECT_LT(exact.result.relative_loss, 0.9 * nearest.result.relative_loss) << seed;
      EXPECT_LT(diagonal.result.relative_loss, nearest.result.relative_loss) << seed;
      EXPECT_LT(euclidean.result.relative_loss, nearest.result.relative_loss) << seed;
      exact_sum += exact.result.relative_loss;
      diagonal_sum += diagonal.result.relative_loss;
    }
  }
  EXPECT_LE(exact_sum, diagonal_sum);
}

// The exact update's objective comes from the sweep's own errors; it must equal the objective of
// the decoded matrix, dead columns and damping included.
TEST(VqEncode, SweptObjectiveMatchesTheDecodedMatrix) {
  const std::uint64_t rows = 16, cols = 256;
  const auto h = testing::correlated_second_moments(cols, 700, 23, testing::DeadBlock::Yes);
  const auto weight = random_weight(rows, cols, 29);
  const auto codebook = random_codebook(4, 256, 31);
  const auto hessian = prepared(h, cols, 4, true);
  const auto encoded = run(weight, rows, cols, codebook, &hessian, EncodeSettings{}, Backend::Cpu);
  const auto objective = gptq::detail::objective_of_decoded(
      weight, decoded(encoded.quantized, codebook), rows, cols, hessian);
  EXPECT_NEAR(encoded.result.relative_loss, objective.error / objective.reference,
              2e-3 * encoded.result.relative_loss);
}

TEST(VqEncode, DeadColumnsAreZeroed) {
  const std::uint64_t rows = 8, cols = 256;
  const auto h = testing::correlated_second_moments(cols, 700, 37, testing::DeadBlock::Yes);
  const auto weight = random_weight(rows, cols, 41);
  const auto codebook = random_codebook(4, 256, 43);
  const auto hessian = prepared(h, cols, 4, true);
  std::uint64_t dead = 0;
  for (std::uint64_t c = 0; c < cols; ++c) dead += hessian.dead[c];
  ASSERT_EQ(dead, 16u);
  for (auto update : {ErrorUpdate::Exact, ErrorUpdate::Diagonal}) {
    const auto encoded = run(weight, rows, cols, codebook, &hessian,
                             {true, Metric::Mahalanobis, update, ScaleRule::Rms}, Backend::Cpu);
    for (std::uint64_t r = 0; r < rows; ++r)
      for (std::uint64_t c = 0; c < cols; ++c)
        if (hessian.dead[c]) {
          EXPECT_EQ(encoded.swept[r * cols + c], 0.0f) << r << " " << c;
        }
  }
}

// Without a Hessian the refit is per group on the source weights: no group's weight error rises.
TEST(VqEncode, LeastSquaresRefitWithoutAHessianNeverRaisesTheWeightError) {
  const std::uint64_t rows = 24, cols = 384;
  const auto weight = random_weight(rows, cols, 53);
  for (const Case shape : {Case{1, 2}, Case{4, 256}, Case{8, 256}}) {
    const auto codebook = random_codebook(shape.d, shape.k, 59);
    const EncodeSettings rms{false, Metric::Mahalanobis, ErrorUpdate::Exact, ScaleRule::Rms};
    auto least_squares = rms;
    least_squares.scale_rule = ScaleRule::LeastSquares;
    const auto a = run(weight, rows, cols, codebook, nullptr, rms, Backend::Cpu);
    const auto b = run(weight, rows, cols, codebook, nullptr, least_squares, Backend::Cpu);
    ASSERT_EQ(a.quantized.codes, b.quantized.codes);  // the refit keeps the codes
    const auto da = decoded(a.quantized, codebook), db = decoded(b.quantized, codebook);
    bool any_changed = false;
    for (std::uint64_t r = 0; r < rows; ++r)
      for (std::uint64_t g = 0; g < cols / 128; ++g) {
        double ea = 0.0, eb = 0.0;
        for (std::uint64_t c = g * 128; c < (g + 1) * 128; ++c) {
          const double x = weight[r * cols + c];
          ea += (x - da[r * cols + c]) * (x - da[r * cols + c]);
          eb += (x - db[r * cols + c]) * (x - db[r * cols + c]);
        }
        EXPECT_LE(eb, ea * (1.0 + 1e-6)) << r << " " << g;
        any_changed |=
            b.quantized.scales[r * (cols / 128) + g] != a.quantized.scales[r * (cols / 128) + g];
      }
    EXPECT_TRUE(any_changed);
    EXPECT_LT(b.result.energy.error, a.result.energy.error);
    // The same bytes on the reference and at several thread counts.
    const auto reference =
        run(weight, rows, cols, codebook, nullptr, least_squares, Backend::Reference);
    for (int threads : {1, 2, 3}) {
      tbb::task_arena arena(threads);
      Encoded fast;
      arena.execute(
          [&] { fast = run(weight, rows, cols, codebook, nullptr, least_squares, Backend::Cpu); });
      EXPECT_TRUE(same_bits(fast.quantized.scales, reference.quantized.scales)) << threads;
    }
  }
}

// The objective of one row: (w − ŵ)ᵀ·H·(w − ŵ) in f64 from the f64 moments.
double row_objective(const std::vector<float>& weight, const std::vector<float>& values,
                     const std::vector<double>& h, std::uint64_t cols, std::uint64_t r) {
  double sum = 0.0;
  for (std::uint64_t i = 0; i < cols; ++i) {
    double inner = 0.0;
    for (std::uint64_t j = 0; j < cols; ++j)
      inner += h[i * cols + j] * (weight[r * cols + j] - static_cast<double>(values[r * cols + j]));
    sum += (weight[r * cols + i] - static_cast<double>(values[r * cols + i])) * inner;
  }
  return sum;
}

// With a Hessian the row's scales are refitted jointly in the objective's metric: the codes stay,
// no row's objective rises (the rounded solution is only kept when it does not), the total falls.
TEST(VqEncode, LeastSquaresRefitNeverRaisesTheObjective) {
  const std::uint64_t rows = 24, cols = 384;
  const auto h = testing::correlated_second_moments(cols, 900, 47, testing::DeadBlock::Yes);
  const auto weight = random_weight(rows, cols, 53);
  for (const Case shape : {Case{1, 2}, Case{4, 256}, Case{8, 256}}) {
    const auto codebook = random_codebook(shape.d, shape.k, 59);
    const auto hessian = prepared(h, cols, shape.d, true);
    for (bool compensate : {true, false}) {
      const EncodeSettings rms{compensate, Metric::Mahalanobis, ErrorUpdate::Exact, ScaleRule::Rms};
      auto least_squares = rms;
      least_squares.scale_rule = ScaleRule::LeastSquares;
      const auto a = run(weight, rows, cols, codebook, &hessian, rms, Backend::Cpu);
      const auto b = run(weight, rows, cols, codebook, &hessian, least_squares, Backend::Cpu);
      ASSERT_EQ(a.quantized.codes, b.quantized.codes);
      const auto da = decoded(a.quantized, codebook), db = decoded(b.quantized, codebook);
      double total_a = 0.0, total_b = 0.0;
      for (std::uint64_t r = 0; r < rows; ++r) {
        const double ea = row_objective(weight, da, h, cols, r);
        const double eb = row_objective(weight, db, h, cols, r);
        EXPECT_LE(eb, ea * (1.0 + 1e-5)) << r << " compensate " << compensate;
        total_a += ea;
        total_b += eb;
      }
      EXPECT_LT(total_b, 0.99 * total_a) << "d " << shape.d << " compensate " << compensate;
      const auto objective = gptq::detail::objective_of_decoded(weight, db, rows, cols, hessian);
      EXPECT_NEAR(b.result.relative_loss, objective.error / objective.reference,
                  1e-4 * b.result.relative_loss);
    }
  }
}

// With F32 scales (rounding all but a no-op) the refit is the joint least-squares optimum: the
// normal equations built here in f64 from the moments, solved by Gaussian elimination.
TEST(VqEncode, LeastSquaresRefitSolvesTheRowsNormalEquations) {
  const std::uint64_t rows = 6, cols = 512, groups = cols / 128;
  const auto h = testing::correlated_second_moments(cols, 1200, 73);
  const auto weight = random_weight(rows, cols, 79);
  const auto codebook = random_codebook(4, 256, 83);
  const auto hessian = prepared(h, cols, 4, true);
  EncodeSettings settings;
  settings.scale_rule = ScaleRule::LeastSquares;
  VqQuantized quantized;
  encode(weight, rows, cols, DType::F32, codebook, &hessian, settings, Backend::Cpu, quantized);
  for (std::uint64_t r = 0; r < rows; ++r) {
    std::vector<double> unit(groups * cols, 0.0);  // ĉ_g spread over the row, zero elsewhere
    for (std::uint64_t c = 0; c < cols; ++c)
      unit[c / 128 * cols + c] =
          codebook.codewords[quantized.codes[r * (cols / 4) + c / 4] * 4 + c % 4];
    std::vector<double> a(groups * groups), b(groups);
    for (std::uint64_t g = 0; g < groups; ++g) {
      for (std::uint64_t k = 0; k < groups; ++k) {
        double sum = 0.0;
        for (std::uint64_t i = g * 128; i < (g + 1) * 128; ++i)
          for (std::uint64_t j = k * 128; j < (k + 1) * 128; ++j)
            sum += unit[g * cols + i] * h[i * cols + j] * unit[k * cols + j];
        a[g * groups + k] = sum;
      }
      double sum = 0.0;
      for (std::uint64_t i = g * 128; i < (g + 1) * 128; ++i)
        for (std::uint64_t j = 0; j < cols; ++j)
          sum += unit[g * cols + i] * h[i * cols + j] * weight[r * cols + j];
      b[g] = sum;
    }
    for (std::uint64_t p = 0; p < groups; ++p)
      for (std::uint64_t q = p + 1; q < groups; ++q) {
        const double f = a[q * groups + p] / a[p * groups + p];
        for (std::uint64_t k = p; k < groups; ++k) a[q * groups + k] -= f * a[p * groups + k];
        b[q] -= f * b[p];
      }
    for (std::uint64_t p = groups; p-- > 0;) {
      for (std::uint64_t k = p + 1; k < groups; ++k) b[p] -= a[p * groups + k] * b[k];
      b[p] /= a[p * groups + p];
    }
    for (std::uint64_t g = 0; g < groups; ++g)
      EXPECT_NEAR(quantized.scales[r * groups + g], b[g], 1e-4 * std::abs(b[g])) << r << " " << g;
  }
}

// Singular systems and zero groups: a row whose groups are the same vectors under duplicated
// inputs has a singular Gram matrix and keeps the sweep's scales; all-zero groups stay at 0.
TEST(VqEncode, LeastSquaresRefitKeepsScalesOfSingularRowsAndZeroGroups) {
  const std::uint64_t rows = 4, cols = 256, tokens = 400;
  // Inputs of columns 128..255 repeat columns 0..127: H's two diagonal blocks and its
  // off-diagonal blocks are one and the same matrix.
  std::mt19937 generator(89);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> x(tokens * 128);
  for (auto& value : x) value = normal(generator);
  std::vector<double> h(cols * cols, 0.0);
  for (std::uint64_t t = 0; t < tokens; ++t)
    for (std::uint64_t i = 0; i < cols; ++i)
      for (std::uint64_t j = 0; j < cols; ++j)
        h[i * cols + j] += x[t * 128 + i % 128] * x[t * 128 + j % 128];
  auto weight = random_weight(rows, cols, 97);
  for (std::uint64_t c = 0; c < 128; ++c) weight[0 * cols + 128 + c] = weight[0 * cols + c];
  for (std::uint64_t c = 0; c < 128; ++c) weight[1 * cols + c] = 0.0f;  // a zero group
  const auto codebook = random_codebook(4, 256, 101);
  const auto hessian = prepared(h, cols, 4, false, 0.1);
  ASSERT_TRUE(hessian.fallback.empty()) << hessian.fallback;
  EncodeSettings rms;
  rms.compensate = false;  // same vectors, same codes in both groups of row 0
  auto least_squares = rms;
  least_squares.scale_rule = ScaleRule::LeastSquares;
  const auto a = run(weight, rows, cols, codebook, &hessian, rms, Backend::Cpu);
  const auto b = run(weight, rows, cols, codebook, &hessian, least_squares, Backend::Cpu);
  ASSERT_EQ(a.quantized.codes, b.quantized.codes);
  for (std::uint64_t v = 0; v < 32; ++v) ASSERT_EQ(a.quantized.codes[v], a.quantized.codes[32 + v]);
  EXPECT_EQ(b.quantized.scales[0], a.quantized.scales[0]);
  EXPECT_EQ(b.quantized.scales[1], a.quantized.scales[1]);
  EXPECT_EQ(b.quantized.scales[2], 0.0f);  // row 1's zero group
  EXPECT_FALSE(std::signbit(b.quantized.scales[2]));
  EXPECT_NE(b.quantized.scales[3], a.quantized.scales[3]);  // row 1's other group is refitted
  for (float scale : b.quantized.scales) EXPECT_TRUE(std::isfinite(scale));
}

TEST(VqEncode, ZeroAndNegativeZeroGroupsGetScaleZeroAndCodeZero) {
  const std::uint64_t rows = 4, cols = 256;
  auto weight = random_weight(rows, cols, 61);
  for (std::uint64_t c = 0; c < 128; ++c) {
    weight[0 * cols + c] = 0.0f;
    weight[1 * cols + c] = -0.0f;
  }
  const auto codebook = random_codebook(4, 256, 67);
  const auto h = testing::correlated_second_moments(cols, 700, 71);
  const auto hessian = prepared(h, cols, 4, false);  // group 0 is swept first: still all zero
  for (const gptq::PreparedHessian* given :
       {&hessian, static_cast<const gptq::PreparedHessian*>(nullptr)}) {
    const auto encoded = run(weight, rows, cols, codebook, given, EncodeSettings{}, Backend::Cpu);
    const auto values = decoded(encoded.quantized, codebook);
    for (std::uint64_t r = 0; r < 2; ++r) {
      EXPECT_EQ(encoded.quantized.scales[r * 2], 0.0f);
      EXPECT_FALSE(std::signbit(encoded.quantized.scales[r * 2]));
      for (std::uint64_t v = 0; v < 32; ++v) EXPECT_EQ(encoded.quantized.codes[r * 64 + v], 0u);
      for (std::uint64_t c = 0; c < 128; ++c) EXPECT_EQ(values[r * cols + c], 0.0f);
      EXPECT_GT(encoded.quantized.scales[r * 2 + 1], 0.0f);
    }
  }
}

TEST(VqEncode, SubnormalScales) {
  const std::uint64_t rows = 2, cols = 128;
  std::vector<float> weight(rows * cols);
  std::mt19937 generator(73);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& value : weight) value = normal(generator) * 1e-39f;  // f32 subnormals
  const auto codebook = random_codebook(4, 256, 79);
  EncodeSettings settings;
  settings.compensate = false;
  VqQuantized bf16, f16;
  const auto a = encode(weight, rows, cols, DType::BF16, codebook, nullptr, settings,
                        Backend::Reference, bf16);
  // BF16 keeps f32's exponent range: the scale is a subnormal, and the codes still fit.
  for (float scale : bf16.scales) {
    EXPECT_GT(scale, 0.0f);
    EXPECT_EQ(std::fpclassify(scale), FP_SUBNORMAL);
  }
  EXPECT_LT(a.energy.error, a.energy.signal);
  // F16 cannot hold it: scale 0, codes 0, everything decodes to 0.
  const auto b =
      encode(weight, rows, cols, DType::F16, codebook, nullptr, settings, Backend::Reference, f16);
  for (float scale : f16.scales) EXPECT_EQ(scale, 0.0f);
  for (auto code : f16.codes) EXPECT_EQ(code, 0u);
  EXPECT_EQ(b.energy.error, b.energy.signal);
}

TEST(VqEncode, RefusesNonFiniteWeightsNamingRowAndColumn) {
  const std::uint64_t rows = 4, cols = 128;
  const auto codebook = random_codebook(4, 256, 83);
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    auto weight = random_weight(rows, cols, 89);
    weight[2 * cols + 37] = bad;
    VqQuantized out;
    try {
      encode(weight, rows, cols, DType::BF16, codebook, nullptr, EncodeSettings{}, Backend::Cpu,
             out);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), "vq.non_finite");
      EXPECT_NE(std::string(error.what()).find("row 2, column 37"), std::string::npos)
          << error.what();
    }
  }
}

TEST(VqEncode, RefusesAScaleTheDtypeCannotHold) {
  const std::uint64_t rows = 3, cols = 256;
  auto weight = random_weight(rows, cols, 91);
  for (std::uint64_t c = 128; c < 256; ++c) weight[1 * cols + c] = 70000.0f;  // > F16's 65504
  VqQuantized out;
  try {
    encode(weight, rows, cols, DType::F16, random_codebook(4, 16, 1), nullptr, EncodeSettings{},
           Backend::Cpu, out);
    ADD_FAILURE() << "stored an F16 scale of 70000";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "vq.scale_range");
    EXPECT_NE(std::string(error.what()).find("row 1, columns 128..255"), std::string::npos)
        << error.what();
  }
  // BF16 holds it.
  EXPECT_NO_THROW(encode(weight, rows, cols, DType::BF16, random_codebook(4, 16, 1), nullptr,
                         EncodeSettings{}, Backend::Cpu, out));
}

// A Hessian that cannot drive GPTQ (too few tokens) leaves the nearest codewords, still scored
// by the layer objective.
TEST(VqEncode, FallbackHessianGivesTheNearestCodewords) {
  const std::uint64_t rows = 8, cols = 256;
  const auto h = testing::correlated_second_moments(cols, 700, 5);
  gptq::Settings settings;
  settings.order_block = 4;
  settings.min_tokens = 100000;
  const auto hessian = gptq::prepare_hessian(h, cols, 700, settings);
  ASSERT_FALSE(hessian.fallback.empty());
  const auto weight = random_weight(rows, cols, 7);
  const auto codebook = random_codebook(4, 256, 9);
  EncodeSettings plain;
  plain.compensate = false;
  const auto nearest = run(weight, rows, cols, codebook, nullptr, plain, Backend::Cpu);
  const auto encoded = run(weight, rows, cols, codebook, &hessian, EncodeSettings{}, Backend::Cpu);
  EXPECT_EQ(encoded.quantized.codes, nearest.quantized.codes);
  const auto objective = gptq::detail::objective_of_decoded(
      weight, decoded(encoded.quantized, codebook), rows, cols, hessian);
  EXPECT_GT(encoded.result.relative_loss, 0.0);
  EXPECT_NEAR(encoded.result.relative_loss, objective.error / objective.reference,
              1e-6 * encoded.result.relative_loss);
}

TEST(VqEncode, ShapeErrors) {
  const auto weight = random_weight(2, 256, 97);
  VqQuantized out;
  auto encode_with = [&](const Codebook& codebook, std::uint64_t cols) {
    return error_kind_of([&] {
      encode(std::span<const float>(weight).first(2 * cols), 2, cols, DType::BF16, codebook,
             nullptr, EncodeSettings{}, Backend::Cpu, out);
    });
  };
  EXPECT_EQ(encode_with(random_codebook(3, 16, 1), 192), "vq.shape");  // d 3 does not divide 128
  EXPECT_EQ(encode_with(random_codebook(4, 16, 1), 192), "vq.shape");  // 192 not a multiple of 128
  auto short_codebook = random_codebook(4, 16, 1);
  short_codebook.codewords.pop_back();
  EXPECT_EQ(encode_with(short_codebook, 256), "vq.codebook");
  // A Hessian whose order splits vectors cannot drive the sweep.
  const auto h = testing::correlated_second_moments(256, 700, 3);
  const auto split = prepared(h, 256, 1, true);
  EXPECT_EQ(error_kind_of([&] {
              encode(weight, 2, 256, DType::BF16, random_codebook(4, 16, 1), &split,
                     EncodeSettings{}, Backend::Cpu, out);
            }),
            "vq.order");
}

TEST(VqEncode, CudaAgreesWithTheReference) {
  const auto cuda = cuda_availability();
  if (!cuda.usable) GTEST_SKIP() << "no CUDA device: " << cuda.reason;
  const std::uint64_t rows = 96, cols = 512;
  const auto h = testing::correlated_second_moments(cols, 1500, 101, testing::DeadBlock::Yes);
  const auto weight = random_weight(rows, cols, 103);
  for (const Case shape : {Case{1, 4}, Case{4, 4096}, Case{8, 256}}) {
    const auto codebook = random_codebook(shape.d, shape.k, 107);
    const auto hessian = prepared(h, cols, shape.d, true);
    // Without feedback there is no GEMM: the same bytes.
    EncodeSettings plain;
    plain.compensate = false;
    const auto a = run(weight, rows, cols, codebook, &hessian, plain, Backend::Reference);
    const auto b = run(weight, rows, cols, codebook, &hessian, plain, Backend::Cuda);
    EXPECT_EQ(a.quantized.codes, b.quantized.codes);
    EXPECT_TRUE(same_bits(a.quantized.scales, b.quantized.scales));
    for (auto update : {ErrorUpdate::Exact, ErrorUpdate::Diagonal})
      for (auto rule : {ScaleRule::Rms, ScaleRule::LeastSquares}) {
        const EncodeSettings settings{true, Metric::Mahalanobis, update, rule};
        const auto host = run(weight, rows, cols, codebook, &hessian, settings, Backend::Reference);
        const auto gpu = run(weight, rows, cols, codebook, &hessian, settings, Backend::Cuda);
        // cuBLAS sums the lazy update in its own order: near ties may flip, nothing more.
        std::uint64_t same = 0;
        for (std::uint64_t i = 0; i < host.quantized.codes.size(); ++i)
          same += host.quantized.codes[i] == gpu.quantized.codes[i];
        EXPECT_GT(same, host.quantized.codes.size() * 95 / 100) << shape.d;
        EXPECT_NEAR(gpu.result.relative_loss, host.result.relative_loss,
                    0.02 * host.result.relative_loss)
            << shape.d;
      }
  }
}

}  // namespace
}  // namespace qs::vq
