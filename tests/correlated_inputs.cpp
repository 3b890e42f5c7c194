#include "correlated_inputs.h"

#include <random>

namespace qs::testing {

std::vector<double> correlated_second_moments(std::uint64_t k, std::uint64_t tokens, unsigned seed,
                                              DeadBlock dead_block) {
  std::mt19937 generator(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> mixing(8 * k);
  for (auto& value : mixing) value = normal(generator);
  std::vector<double> sums(k * k, 0.0), x(k);
  for (std::uint64_t t = 0; t < tokens; ++t) {
    double latent[8];
    for (double& value : latent) value = normal(generator);
    for (std::uint64_t i = 0; i < k; ++i) {
      x[i] = 0.3 * normal(generator);
      for (int l = 0; l < 8; ++l) x[i] += latent[l] * mixing[l * k + i];
      if (i % 37 == 3) x[i] *= 6.0;
      if (dead_block == DeadBlock::Yes && i / 16 == 2) x[i] = 0.0;
    }
    for (std::uint64_t i = 0; i < k; ++i)
      for (std::uint64_t j = 0; j < k; ++j) sums[i * k + j] += x[i] * x[j];
  }
  return sums;
}

}  // namespace qs::testing
