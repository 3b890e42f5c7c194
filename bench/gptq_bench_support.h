#pragma once
// What the GPTQ benches share: a wall-clock reading and the synthetic layer they time, so that
// the integer and the NVFP4 bench measure the same Hessian and weight for the same sizes.

#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

#include "qs/quant/deterministic_blas.h"

namespace qs::bench {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct SyntheticLayer {
  std::vector<double> hessian;  // cols × cols, both triangles filled
  std::vector<float> weight;    // rows × cols, Gaussian (σ 0.02)
};

// XᵀX of `tokens` rows of Gaussian inputs sharing one direction, and the weight, from a fixed
// seed (the same layer on every run).
inline SyntheticLayer synthetic_layer(std::uint64_t rows, std::uint64_t cols,
                                      std::uint64_t tokens) {
  std::mt19937 generator(1);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> inputs(tokens * cols);
  for (auto& value : inputs) value = normal(generator);
  for (std::uint64_t t = 0; t < tokens; ++t)  // a shared direction, as real activations have
    for (std::uint64_t c = 1; c < cols; ++c) inputs[t * cols + c] += 0.5 * inputs[t * cols];
  SyntheticLayer layer{std::vector<double>(cols * cols, 0.0), std::vector<float>(rows * cols)};
  qs::blas::add_gram_upper(tokens, cols, inputs.data(), layer.hessian.data());
  for (std::uint64_t i = 0; i < cols; ++i)
    for (std::uint64_t j = 0; j < i; ++j) layer.hessian[i * cols + j] = layer.hessian[j * cols + i];
  inputs = {};
  std::normal_distribution<float> small(0.0f, 0.02f);
  for (auto& value : layer.weight) value = small(generator);
  return layer;
}

}  // namespace qs::bench
