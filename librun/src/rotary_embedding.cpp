#include "qs/run/rotary_embedding.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace qs::run {
namespace {

// The rotary dimension whose wavelength fits `rotations` times into the original context
// (YaRN's correction range bounds).
double correction_dimension(double rotations, double dims, double theta, double context) {
  return dims * std::log(context / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(theta));
}

// YaRN: high-frequency pairs keep their frequency (extrapolation), low-frequency ones are
// divided by the factor (interpolation), with a linear ramp between, computed in f32 as
// transformers does so the tables agree to the last bit where the arithmetic allows.
std::vector<float> yarn_inverse_frequencies(std::uint64_t dims, double theta,
                                            const YarnScaling& yarn) {
  double low = correction_dimension(yarn.beta_fast, static_cast<double>(dims), theta,
                                    yarn.original_max_position_embeddings);
  double high = correction_dimension(yarn.beta_slow, static_cast<double>(dims), theta,
                                     yarn.original_max_position_embeddings);
  if (yarn.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dims - 1));
  if (low == high) high += 0.001;  // as transformers: avoids dividing by zero
  const auto factor = static_cast<float>(yarn.factor);
  std::vector<float> frequencies(dims / 2);
  for (std::uint64_t j = 0; j < dims / 2; ++j) {
    const float exponent = static_cast<float>(2 * j) / static_cast<float>(dims);
    const auto wavelength_base = static_cast<float>(std::pow(theta, static_cast<double>(exponent)));
    const float extrapolated = 1.0f / wavelength_base;
    const float interpolated = 1.0f / (factor * wavelength_base);
    const float ramp =
        std::clamp(static_cast<float>((static_cast<float>(j) - low) / (high - low)), 0.0f, 1.0f);
    const float keep = 1.0f - ramp;
    frequencies[j] = interpolated * (1.0f - keep) + extrapolated * keep;
  }
  return frequencies;
}

float yarn_attention_factor(const YarnScaling& yarn) {
  if (yarn.attention_factor) return static_cast<float>(*yarn.attention_factor);
  if (yarn.mscale != 0.0 && yarn.mscale_all_dim != 0.0)
    return static_cast<float>(yarn_magnitude(yarn.factor, yarn.mscale) /
                              yarn_magnitude(yarn.factor, yarn.mscale_all_dim));
  return static_cast<float>(yarn_magnitude(yarn.factor, 1.0));
}

}  // namespace

double yarn_magnitude(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

double softmax_scale_factor(const std::optional<YarnScaling>& yarn) {
  if (!yarn || yarn->mscale_all_dim == 0.0) return 1.0;
  const double magnitude = yarn_magnitude(yarn->factor, yarn->mscale_all_dim);
  return magnitude * magnitude;
}

RotaryEmbedding::RotaryEmbedding(std::uint64_t dims, double theta, RotaryPairing pairing,
                                 const std::optional<YarnScaling>& yarn)
    : dims_(dims), pairing_(pairing) {
  if (yarn) {
    inverse_frequencies_ = yarn_inverse_frequencies(dims, theta, *yarn);
    attention_factor_ = yarn_attention_factor(*yarn);
    return;
  }
  inverse_frequencies_.resize(dims / 2);
  for (std::uint64_t j = 0; j < dims / 2; ++j)
    inverse_frequencies_[j] =
        static_cast<float>(std::pow(theta, -2.0 * static_cast<double>(j) / dims));
}

void RotaryEmbedding::rotate(float* x, std::uint64_t position) const {
  // Pair j is (first, second) = (2j, 2j+1) interleaved, or (j, j + dims/2) in halves.
  const std::uint64_t half = dims_ / 2;
  const std::uint64_t stride = pairing_ == RotaryPairing::Interleaved ? 2 : 1;
  const std::uint64_t partner = pairing_ == RotaryPairing::Interleaved ? 1 : half;
  for (std::uint64_t j = 0; j < half; ++j) {
    const float angle = static_cast<float>(position) * inverse_frequencies_[j];
    const float cosine = std::cos(angle) * attention_factor_;
    const float sine = std::sin(angle) * attention_factor_;
    float& first = x[j * stride];
    float& second = x[j * stride + partner];
    const float a = first, b = second;
    first = a * cosine - b * sine;
    second = b * cosine + a * sine;
  }
}

}  // namespace qs::run
