// Codeword search and codebook fitting throughput:
//   qs_bench_vq_codebook [VECTORS] [REFERENCE_VECTORS] [FIT_POINTS] [ROUNDS] [cpu|cuda]
// (defaults 1048576 65536 1048576 25 cpu). nearest_codewords for d4/K4096 (vq3), d4/K256 (vq2)
// and d8/K256 (vq1), Euclidean and with a d×d metric: vectors/s and GFLOP/s (2d + 1 flops per
// vector and codeword), the reference timed on the first REFERENCE_VECTORS vectors (it is
// slow) and checked equal to the fast backend there. Then fit_codebook for every learned preset
// tier on FIT_POINTS random-normal sub-vectors with column-like weights: the seeding alone
// (0 rounds) and the whole fit. Timings do not depend on the values.

#include <fmt/format.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "qs/quant/vq.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

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

std::vector<float> diagonal_heavy_metric(std::uint32_t d) {
  std::vector<float> metric(std::uint64_t{d} * d, 0.1f);
  for (std::uint32_t i = 0; i < d; ++i) metric[i * d + i] = 1.0f + i;
  return metric;
}

}  // namespace

int main(int argc, char** argv) {
  using qs::vq::Backend;
  const std::uint64_t vectors = argc > 1 ? std::stoull(argv[1]) : (1u << 20);
  const std::uint64_t reference_vectors = argc > 2 ? std::stoull(argv[2]) : 65536;
  const std::uint64_t fit_points = argc > 3 ? std::stoull(argv[3]) : (1u << 20);
  const std::uint32_t rounds = argc > 4 ? static_cast<std::uint32_t>(std::stoul(argv[4])) : 25;
  const bool cuda = argc > 5 && std::string(argv[5]) == "cuda";
  const Backend fast = cuda ? Backend::Cuda : Backend::Cpu;
  const char* fast_name = cuda ? "cuda" : "cpu";

  fmt::print("nearest_codewords on {} vectors ({} for the reference)\n", vectors,
             reference_vectors);
  struct Shape {
    const char* tier;
    std::uint32_t d, k;
  };
  for (const Shape shape : {Shape{"vq3", 4, 4096}, Shape{"vq2", 4, 256}, Shape{"vq1", 8, 256}}) {
    const qs::vq::Tier tier = *qs::preset_vq_tier(shape.tier);
    qs::vq::Codebook codebook{tier, qs::DType::F16, normal_values(std::uint64_t{shape.k} * shape.d, 1)};
    const auto data = normal_values(vectors * shape.d, 2);
    const double flops_per_vector = static_cast<double>(shape.k) * (2.0 * shape.d + 1.0);
    for (const bool with_metric : {false, true}) {
      const auto metric = with_metric ? diagonal_heavy_metric(shape.d) : std::vector<float>{};
      std::vector<std::uint32_t> codes(vectors), reference_codes(reference_vectors);
      auto start = std::chrono::steady_clock::now();
      qs::vq::nearest_codewords(data, vectors, codebook, metric, codes, fast);
      const double fast_s = seconds_since(start);
      start = std::chrono::steady_clock::now();
      qs::vq::nearest_codewords(std::span(data).first(reference_vectors * shape.d),
                                reference_vectors, codebook, metric, reference_codes,
                                Backend::Reference);
      const double reference_s = seconds_since(start);
      const bool equal = std::equal(reference_codes.begin(), reference_codes.end(), codes.begin());
      fmt::print("  {:<4} d{} K{:<5} {:<9}  {:<4} {:10.0f} vectors/s {:6.2f} GFLOP/s ({:.3f} s)"
                 "   reference {:9.0f} vectors/s {:5.2f} GFLOP/s   {}\n",
                 shape.tier, shape.d, shape.k, with_metric ? "metric" : "euclidean", fast_name,
                 vectors / fast_s, vectors * flops_per_vector / fast_s * 1e-9, fast_s,
                 reference_vectors / reference_s,
                 reference_vectors * flops_per_vector / reference_s * 1e-9,
                 equal ? "codes equal" : "CODES DIFFER");
    }
  }

  fmt::print("fit_codebook on {} weighted sub-vectors, {} Lloyd rounds at most, {}\n", fit_points,
             rounds, fast_name);
  for (const char* name : {"vq2", "vq1", "vq3", "vq1.5"}) {
    const qs::vq::Tier tier = *qs::preset_vq_tier(name);
    const auto points = normal_values(fit_points * tier.d, 3);
    std::vector<float> weights(points.size());
    for (std::uint64_t i = 0; i < weights.size(); ++i)
      weights[i] = 0.25f + static_cast<float>((i * 7) % 13) / 4.0f;
    auto start = std::chrono::steady_clock::now();
    qs::vq::fit_codebook(points, weights, tier, qs::DType::F16, {.seed = 1, .iterations = 0},
                         fast);
    const double seed_s = seconds_since(start);
    start = std::chrono::steady_clock::now();
    qs::vq::fit_codebook(points, weights, tier, qs::DType::F16, {.seed = 1, .iterations = rounds},
                         fast);
    const double fit_s = seconds_since(start);
    fmt::print("  {:<5} d{} K{:<5}  seeding {:8.2f} s   seeding + {} rounds {:8.2f} s\n", name,
               tier.d, tier.k, seed_s, rounds, fit_s);
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  fmt::print("peak RSS {:.0f} MiB\n", usage.ru_maxrss / 1024.0);
}
