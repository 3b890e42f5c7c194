// VQ codebooks (uniform levels, weighted k-means, refinement) and the codeword search: the CPU
// and CUDA searches bit-identical to the reference at any thread count.

#include <gtest/gtest.h>
#include <tbb/global_control.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "qs/ckpt/core/error.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/int_group.h"
#include "qs/quant/vq.h"

namespace qs::vq {
namespace {

// Standard normal values from a portable generator (std::normal_distribution is not portable):
// Box–Muller on mt19937_64's raw output.
std::vector<float> normal_values(std::uint64_t count, std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  auto uniform = [&] { return (static_cast<double>(generator() >> 11) + 0.5) * 0x1.0p-53; };
  std::vector<float> values(count);
  for (std::uint64_t i = 0; i < count; i += 2) {
    const double radius = std::sqrt(-2.0 * std::log(uniform())), angle = 2.0 * M_PI * uniform();
    values[i] = static_cast<float>(radius * std::cos(angle));
    if (i + 1 < count) values[i + 1] = static_cast<float>(radius * std::sin(angle));
  }
  return values;
}

Codebook random_codebook(const Tier& tier, std::uint64_t seed) {
  Codebook codebook{tier, DType::F16, normal_values(std::uint64_t{tier.k} * tier.d, seed)};
  for (float& value : codebook.codewords) value = intq::round_to_dtype(value, DType::F16);
  return codebook;
}

// A symmetric positive definite d×d metric: A·Aᵀ + d·I.
std::vector<float> random_metric(std::uint32_t d, std::uint64_t seed) {
  const auto a = normal_values(std::uint64_t{d} * d, seed);
  std::vector<float> metric(std::uint64_t{d} * d);
  for (std::uint32_t i = 0; i < d; ++i)
    for (std::uint32_t j = 0; j < d; ++j) {
      double sum = i == j ? d : 0.0;
      for (std::uint32_t l = 0; l < d; ++l) sum += double{a[i * d + l]} * a[j * d + l];
      metric[i * d + j] = static_cast<float>(sum);
    }
  return metric;
}

std::vector<std::uint32_t> search(std::span<const float> vectors, const Codebook& codebook,
                                  std::span<const float> metric, Backend backend) {
  std::vector<std::uint32_t> codes(vectors.size() / codebook.tier.d);
  nearest_codewords(vectors, codes.size(), codebook, metric, codes, backend);
  return codes;
}

std::string error_kind(auto&& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.kind();
  }
  return "no error";
}

// ---- uniform codebooks ----

TEST(VqUniformCodebook, LevelsMinimiseTheErrorOfAUnitNormal) {
  const Codebook two = uniform_codebook(*preset_vq_tier("int1"));
  ASSERT_EQ(two.codewords.size(), 2u);
  EXPECT_NEAR(two.codewords[1], std::sqrt(2.0 / M_PI), 1e-3);  // E|x| = 0.7979
  EXPECT_EQ(two.codewords[0], -two.codewords[1]);
  const Codebook four = uniform_codebook(*preset_vq_tier("int2"));
  EXPECT_NEAR(four.codewords[2], 0.4979, 2e-3);
  EXPECT_NEAR(four.codewords[3], 1.4937, 2e-3);
  const Codebook eight = uniform_codebook(*preset_vq_tier("int3"));
  for (std::uint32_t i = 0; i + 1 < 8; ++i)
    EXPECT_NEAR(eight.codewords[i + 1] - eight.codewords[i], 0.586, 3e-3);
  for (const Codebook* codebook : {&two, &four, &eight})
    for (const float value : codebook->codewords)
      EXPECT_EQ(value, intq::round_to_dtype(value, DType::F16));
  const Codebook bf16 = uniform_codebook(*preset_vq_tier("int1"), DType::BF16);
  EXPECT_EQ(bf16.codewords[1], intq::round_to_dtype(0.7978846f, DType::BF16));
}

TEST(VqUniformCodebook, NeedsScalarTiersAndAHalfPrecisionType) {
  EXPECT_EQ(error_kind([] { uniform_codebook(*preset_vq_tier("vq2")); }), "vq.codebook");
  EXPECT_EQ(error_kind([] { uniform_codebook(*preset_vq_tier("int2"), DType::F32); }),
            "vq.codebook");
}

// ---- codeword search ----

TEST(VqNearestCodewords, TiesSignedZerosAndZeroVectors) {
  const Tier tier{"t", 4, 9, CodebookKind::Learned};
  // ‖c‖² = 1 for codes 0, 1, 4, 6, 7, 8; code 6 repeats code 4.
  Codebook codebook{tier, DType::F16,
                    {1, 0, 0, 0,  -1, 0, 0, 0,  0, 2, 0, 0,  0, -2, 0, 0,
                     0.5f, 0.5f, 0.5f, 0.5f,  0, 0, 3, 0,  0.5f, 0.5f, 0.5f, 0.5f,
                     0, 0, 0, 1,  0, 0, 0, -1}};
  const float negative_zero = -0.0f;
  const std::vector<float> vectors = {
      0, 0, 0, 0,  // the zero vector: six codewords at distance 1 → the first
      negative_zero, negative_zero, negative_zero, negative_zero,  // as +0
      0.5f, 0.5f, 0.5f, 0.5f,  // codes 4 and 6 identical → 4
      0, 0, 0, negative_zero,  // −0.0 picks like +0.0
      0, 0, 0, -0.75f,         // → 8
      0, 1, 0, 0,              // exactly 1 from code 2 and from code 4 → 2
  };
  const std::vector<std::uint32_t> expected = {0, 0, 4, 0, 8, 2};
  for (const Backend backend : {Backend::Reference, Backend::Cpu}) {
    EXPECT_EQ(search(vectors, codebook, {}, backend), expected);
    // The identity metric gives the Euclidean answer.
    const std::vector<float> identity = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    EXPECT_EQ(search(vectors, codebook, identity, backend), expected);
  }
  // The scalar sign codebook: 0 sits exactly between ±0.798 and takes the first.
  const Codebook sign = uniform_codebook(*preset_vq_tier("int1"));
  const std::vector<float> scalars = {0.0f, negative_zero, 0.1f, -0.1f, 5.0f, -5.0f};
  for (const Backend backend : {Backend::Reference, Backend::Cpu})
    EXPECT_EQ(search(scalars, sign, {}, backend), (std::vector<std::uint32_t>{0, 0, 1, 0, 1, 0}));
}

TEST(VqNearestCodewords, NonFiniteVectorsGiveTheSameCodeOnEveryBackend) {
  // The encode refuses non-finite weights before searching; the search itself still answers
  // deterministically: a NaN cost never wins, and no finite cost at all gives code 0.
  const Tier tier{"t", 4, 20, CodebookKind::Learned};
  Codebook codebook = random_codebook(tier, 17);
  std::fill_n(codebook.codewords.begin() + 12, 4, 0.0f);  // a zero codeword: 0·∞ = NaN
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> vectors = {nan, 0, 0, 0,  inf, 0, 0, 0,  -inf, 1, 0, 0,
                                      inf, -inf, 0, 0,  nan, nan, nan, nan};
  const auto reference = search(vectors, codebook, {}, Backend::Reference);
  EXPECT_EQ(reference[0], 0u);
  EXPECT_EQ(reference[4], 0u);
  EXPECT_EQ(search(vectors, codebook, {}, Backend::Cpu), reference);
  const auto metric = random_metric(4, 2);
  EXPECT_EQ(search(vectors, codebook, metric, Backend::Cpu),
            search(vectors, codebook, metric, Backend::Reference));
}

TEST(VqNearestCodewords, TheMetricCostIsMinimised) {
  const Tier tier{"t", 4, 256, CodebookKind::Learned};
  const Codebook codebook = random_codebook(tier, 3);
  const auto metric = random_metric(4, 4);
  const auto vectors = normal_values(4 * 500, 5);
  const auto codes = search(vectors, codebook, metric, Backend::Reference);
  for (std::uint64_t i = 0; i < 500; ++i) {
    auto cost = [&](std::uint32_t code) {
      double sum = 0.0;
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b)
          sum += (double{vectors[i * 4 + a]} - codebook.codewords[code * 4 + a]) *
                 metric[a * 4 + b] *
                 (double{vectors[i * 4 + b]} - codebook.codewords[code * 4 + b]);
      return sum;
    };
    double best = std::numeric_limits<double>::infinity();
    for (std::uint32_t code = 0; code < 256; ++code) best = std::min(best, cost(code));
    // The f32 expansion may pick a near-tie; never a clearly worse codeword.
    EXPECT_LE(cost(codes[i]), best + 1e-4 * (1.0 + best)) << "vector " << i;
  }
}

// Vectors on a coarse grid against a codebook with repeated codewords: many exact ties.
struct SearchCase {
  std::uint32_t d;
  std::uint32_t k;
};

void expect_cpu_equals_reference(const SearchCase& shape, bool with_metric) {
  const Tier tier{"t", shape.d, shape.k, CodebookKind::Learned};
  Codebook codebook = random_codebook(tier, shape.d * 7919u + shape.k);
  for (std::uint32_t code = 1; code < shape.k; code += 5)  // duplicates of earlier codewords
    std::copy_n(codebook.codewords.begin() + (code / 2) * shape.d, shape.d,
                codebook.codewords.begin() + std::uint64_t{code} * shape.d);
  // 3001: batches of four and a remainder searched alone.
  std::vector<float> vectors = normal_values(std::uint64_t{shape.d} * 3001, shape.k + 11);
  for (std::uint64_t i = 0; i < vectors.size() / 2; ++i)
    vectors[i] = std::round(vectors[i] * 2.0f) / 2.0f;
  const auto metric = with_metric ? random_metric(shape.d, shape.d + 1) : std::vector<float>{};
  const auto reference = search(vectors, codebook, metric, Backend::Reference);
  for (const int threads : {1, 2, 3}) {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, threads);
    EXPECT_EQ(search(vectors, codebook, metric, Backend::Cpu), reference)
        << "d " << shape.d << " K " << shape.k << " threads " << threads;
  }
}

constexpr SearchCase kSearchCases[] = {{1, 2}, {1, 8}, {4, 256}, {4, 4096}, {8, 256},
                                       {8, 100}, {2, 37}, {16, 64}};

TEST(VqNearestCodewords, CpuEqualsReferenceEuclidean) {
  for (const SearchCase& shape : kSearchCases) expect_cpu_equals_reference(shape, false);
}

TEST(VqNearestCodewords, CpuEqualsReferenceWithMetric) {
  for (const SearchCase& shape : kSearchCases) expect_cpu_equals_reference(shape, true);
}

TEST(VqNearestCodewords, CudaEqualsReference) {
  const CudaAvailability cuda = cuda_availability();
  if (!cuda.usable) GTEST_SKIP() << "no CUDA device: " << cuda.reason;
  for (const SearchCase& shape : kSearchCases)
    for (const bool with_metric : {false, true}) {
      const Tier tier{"t", shape.d, shape.k, CodebookKind::Learned};
      const Codebook codebook = random_codebook(tier, shape.k);
      const auto vectors = normal_values(std::uint64_t{shape.d} * 5000, shape.d);
      const auto metric = with_metric ? random_metric(shape.d, 9) : std::vector<float>{};
      EXPECT_EQ(search(vectors, codebook, metric, Backend::Cuda),
                search(vectors, codebook, metric, Backend::Reference))
          << "d " << shape.d << " K " << shape.k << " metric " << with_metric;
    }
}

TEST(VqNearestCodewords, RefusesAMisshapenCodebook) {
  Codebook codebook = random_codebook(Tier{"t", 4, 16, CodebookKind::Learned}, 1);
  codebook.codewords.resize(60);
  const std::vector<float> vectors(8);
  std::vector<std::uint32_t> codes(2);
  EXPECT_EQ(error_kind([&] { nearest_codewords(vectors, 2, codebook, {}, codes, Backend::Cpu); }),
            "vq.codebook");
}

// ---- k-means ----

// Σ_i Σ_j w_ij (x_ij − c_j)² to each point's nearest codeword (by the weighted distance), f64.
double weighted_distortion(std::span<const float> points, std::span<const float> weights,
                           std::span<const float> codewords, std::uint32_t d) {
  const std::uint64_t count = points.size() / d, k = codewords.size() / d;
  double total = 0.0;
  for (std::uint64_t i = 0; i < count; ++i) {
    double best = std::numeric_limits<double>::infinity();
    for (std::uint64_t code = 0; code < k; ++code) {
      double sum = 0.0;
      for (std::uint32_t j = 0; j < d; ++j) {
        const double difference = double{points[i * d + j]} - codewords[code * d + j];
        sum += (weights.empty() ? 1.0 : weights[i * d + j]) * difference * difference;
      }
      best = std::min(best, sum);
    }
    total += best;
  }
  return total;
}

// Per-point weights as the job makes them: one per input column, cycling over 4 columns' worth.
std::vector<float> column_weights(std::uint64_t count, std::uint32_t d) {
  std::vector<float> weights(count * d);
  for (std::uint64_t i = 0; i < weights.size(); ++i)
    weights[i] = 0.25f + static_cast<float>((i * 7) % 13) / 4.0f;
  return weights;
}

TEST(VqKMeans, DeterministicAcrossThreadCountsAndBackends) {
  const Tier tier{"t", 4, 64, CodebookKind::Learned};
  // 12001 points: the CPU assigns batches of four and a remainder alone.
  const auto points = normal_values(4 * 12001, 21);
  const auto weights = column_weights(12001, 4);
  const KMeansSettings settings{.seed = 99, .iterations = 8};
  const Codebook reference = fit_codebook(points, weights, tier, DType::F16, settings,
                                          Backend::Reference);
  for (const int threads : {1, 2, 3}) {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, threads);
    EXPECT_EQ(fit_codebook(points, weights, tier, DType::F16, settings, Backend::Cpu).codewords,
              reference.codewords)
        << threads << " threads";
  }
  // Another seed, another codebook.
  EXPECT_NE(fit_codebook(points, weights, tier, DType::F16, {.seed = 100, .iterations = 8},
                         Backend::Cpu)
                .codewords,
            reference.codewords);
  for (const float value : reference.codewords)
    EXPECT_EQ(value, intq::round_to_dtype(value, DType::F16));
}

TEST(VqKMeans, CudaFitEqualsReference) {
  const CudaAvailability cuda = cuda_availability();
  if (!cuda.usable) GTEST_SKIP() << "no CUDA device: " << cuda.reason;
  const KMeansSettings settings{.seed = 3, .iterations = 6};
  for (const Tier& tier : {Tier{"a", 4, 256, CodebookKind::Learned},
                           Tier{"b", 8, 4096, CodebookKind::Learned},
                           Tier{"c", 2, 37, CodebookKind::Learned}}) {
    const std::uint64_t count = 9001;
    const auto points = normal_values(tier.d * count, tier.k);
    const auto weights = column_weights(count, tier.d);
    EXPECT_EQ(fit_codebook(points, weights, tier, DType::F16, settings, Backend::Cuda).codewords,
              fit_codebook(points, weights, tier, DType::F16, settings, Backend::Reference)
                  .codewords)
        << tier.name;
    EXPECT_EQ(fit_codebook(points, {}, tier, DType::F16, settings, Backend::Cuda).codewords,
              fit_codebook(points, {}, tier, DType::F16, settings, Backend::Cpu).codewords)
        << tier.name << " without weights";
  }
}

TEST(VqKMeans, LloydRoundsReduceTheWeightedDistortionOfTheSeeding) {
  const Tier tier{"t", 4, 32, CodebookKind::Learned};
  const auto points = normal_values(4 * 8000, 31);
  const auto weights = column_weights(8000, 4);
  // No Lloyd round: the k-means++ seeding alone (rounded to f16).
  const Codebook seeded =
      fit_codebook(points, weights, tier, DType::F16, {.seed = 7, .iterations = 0}, Backend::Cpu);
  const Codebook fitted =
      fit_codebook(points, weights, tier, DType::F16, {.seed = 7, .iterations = 25}, Backend::Cpu);
  const double before = weighted_distortion(points, weights, seeded.codewords, 4);
  const double after = weighted_distortion(points, weights, fitted.codewords, 4);
  EXPECT_LT(after, 0.85 * before) << before << " → " << after;
}

TEST(VqKMeans, AHeavilyWeightedCoordinateIsFitBetter) {
  const Tier tier{"t", 2, 16, CodebookKind::Learned};
  const std::uint64_t count = 6000;
  const auto points = normal_values(2 * count, 41);
  std::vector<float> weights(2 * count);
  for (std::uint64_t i = 0; i < count; ++i) {
    weights[2 * i] = 100.0f;
    weights[2 * i + 1] = 1.0f;
  }
  const KMeansSettings settings{.seed = 5, .iterations = 25};
  const Codebook weighted = fit_codebook(points, weights, tier, DType::F16, settings, Backend::Cpu);
  const Codebook plain = fit_codebook(points, {}, tier, DType::F16, settings, Backend::Cpu);
  // Error of coordinate 0 alone, each point coded by its own codebook's weighted choice.
  auto first_coordinate_error = [&](const Codebook& codebook, std::span<const float> w) {
    std::vector<std::uint32_t> codes(count);
    std::vector<float> scaled(points.size());
    // The weighted choice is the Euclidean choice on √w-scaled coordinates.
    Codebook scaled_codebook = codebook;
    for (std::uint64_t i = 0; i < points.size(); ++i)
      scaled[i] = points[i] * std::sqrt(w.empty() ? 1.0f : w[i]);
    for (std::uint64_t i = 0; i < scaled_codebook.codewords.size(); ++i)
      scaled_codebook.codewords[i] *= std::sqrt(w.empty() ? 1.0f : w[i % 2]);
    nearest_codewords(scaled, count, scaled_codebook, {}, codes, Backend::Cpu);
    double error = 0.0;
    for (std::uint64_t i = 0; i < count; ++i) {
      const double difference = double{points[2 * i]} - codebook.codewords[codes[i] * 2];
      error += difference * difference;
    }
    return error / count;
  };
  const double weighted_error = first_coordinate_error(weighted, weights);
  const double plain_error = first_coordinate_error(plain, {});
  EXPECT_LT(weighted_error, 0.5 * plain_error) << weighted_error << " vs " << plain_error;
}

TEST(VqKMeans, FewerPointsThanCodewordsStillGiveACodebook) {
  const Tier tier{"t", 4, 64, CodebookKind::Learned};
  const auto points = normal_values(4 * 10, 51);
  const Codebook codebook =
      fit_codebook(points, {}, tier, DType::F16, {.seed = 1, .iterations = 5}, Backend::Cpu);
  ASSERT_EQ(codebook.codewords.size(), 64u * 4);
  // Every point is (up to f16 rounding) one of the codewords.
  EXPECT_LT(weighted_distortion(points, {}, codebook.codewords, 4), 10 * 4 * 1e-5);
  EXPECT_EQ(codebook.codewords, fit_codebook(points, {}, tier, DType::F16,
                                             {.seed = 1, .iterations = 5}, Backend::Reference)
                                    .codewords);
}

TEST(VqKMeans, RefusesBadSamples) {
  const Tier tier{"t", 4, 8, CodebookKind::Learned};
  std::vector<float> points = normal_values(4 * 20, 61);
  EXPECT_EQ(error_kind([&] { fit_codebook({}, {}, tier, DType::F16, {}, Backend::Cpu); }),
            "vq.sample");
  std::vector<float> weights(points.size(), 1.0f);
  weights[17] = -1.0f;
  EXPECT_EQ(error_kind([&] { fit_codebook(points, weights, tier, DType::F16, {}, Backend::Cpu); }),
            "vq.weights");
  points[9] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(error_kind([&] { fit_codebook(points, {}, tier, DType::F16, {}, Backend::Cpu); }),
            "vq.non_finite");
  EXPECT_EQ(error_kind([&] {
              fit_codebook(points, {}, *preset_vq_tier("int2"), DType::F16, {}, Backend::Cpu);
            }),
            "vq.codebook");
}

// ---- refinement ----

// Codes by nearest codeword of each RMS-normalised vector; scales the groups' RMS in BF16.
VqQuantized encode_nearest(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                           const Codebook& codebook) {
  const std::uint32_t d = codebook.tier.d;
  VqQuantized quantized{rows, cols, DType::BF16, std::vector<std::uint32_t>(rows * cols / d),
                        std::vector<float>(rows * cols / kScaleGroup)};
  std::vector<float> normalised(weight.size());
  for (std::uint64_t r = 0; r < rows; ++r)
    for (std::uint64_t g = 0; g < cols / kScaleGroup; ++g) {
      double sum = 0.0;
      for (std::uint64_t c = g * kScaleGroup; c < (g + 1) * kScaleGroup; ++c)
        sum += double{weight[r * cols + c]} * weight[r * cols + c];
      const float scale =
          intq::round_to_dtype(static_cast<float>(std::sqrt(sum / kScaleGroup)), DType::BF16);
      quantized.scales[r * (cols / kScaleGroup) + g] = scale;
      for (std::uint64_t c = g * kScaleGroup; c < (g + 1) * kScaleGroup; ++c)
        normalised[r * cols + c] = scale == 0.0f ? 0.0f : weight[r * cols + c] / scale;
    }
  nearest_codewords(normalised, rows * cols / d, codebook, {}, quantized.codes, Backend::Cpu);
  return quantized;
}

double decoded_error(std::span<const float> weight, const VqQuantized& quantized,
                     const Codebook& codebook, std::span<const float> column_weight) {
  std::vector<float> decoded(weight.size());
  decode(quantized, codebook, decoded);
  double error = 0.0;
  for (std::uint64_t i = 0; i < weight.size(); ++i) {
    const double difference = double{weight[i]} - decoded[i];
    error += column_weight[i % quantized.cols] * difference * difference;
  }
  return error;
}

TEST(VqCodebookRefinement, NeverIncreasesTheErrorOfFixedCodes) {
  const Tier tier{"t", 4, 64, CodebookKind::Learned};
  const Codebook start = random_codebook(tier, 71);
  const std::uint64_t rows = 16, cols = 256;
  std::vector<float> column_weight(cols);
  for (std::uint64_t c = 0; c < cols; ++c) column_weight[c] = 0.5f + (c % 5);
  CodebookRefinement refinement(start);
  std::vector<std::vector<float>> matrices;
  std::vector<VqQuantized> encoded;
  for (std::uint64_t m = 0; m < 3; ++m) {
    matrices.push_back(normal_values(rows * cols, 80 + m));
    for (std::uint64_t c = 0; c < kScaleGroup; ++c) matrices.back()[c] = 0.0f;  // a zero group
    encoded.push_back(encode_nearest(matrices.back(), rows, cols, start));
    refinement.add(matrices.back(), encoded.back(), column_weight);
  }
  const Codebook refined = refinement.refined();
  double before = 0.0, after = 0.0;
  for (std::uint64_t m = 0; m < 3; ++m) {
    before += decoded_error(matrices[m], encoded[m], start, column_weight);
    after += decoded_error(matrices[m], encoded[m], refined, column_weight);
  }
  EXPECT_LE(after, before);
  EXPECT_LT(after, 0.9 * before) << "a random start should improve clearly";
  // A codeword no vector chose keeps its value.
  std::vector<bool> used(tier.k, false);
  for (const auto& quantized : encoded)
    for (const std::uint32_t code : quantized.codes) used[code] = true;
  for (std::uint32_t code = 0; code < tier.k; ++code)
    if (!used[code]) {
      for (std::uint32_t j = 0; j < 4; ++j)
        EXPECT_EQ(refined.codewords[code * 4 + j], start.codewords[code * 4 + j]);
    }
  for (const float value : refined.codewords)
    EXPECT_EQ(value, intq::round_to_dtype(value, DType::F16));
}

}  // namespace
}  // namespace qs::vq
