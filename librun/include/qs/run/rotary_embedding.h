#pragma once
// Rotary position embedding as the three families apply it: a table of inverse frequencies
// (plain RoPE, or YaRN-interpolated for DeepSeek-V3's long context), applied either to
// interleaved pairs (2j, 2j+1) — GLM-5 and DeepSeek-V3 with rope_interleave — or to the two
// halves (j, j + dims/2) — transformers' rotate_half, Qwen3-MoE.

#include <cstdint>
#include <optional>
#include <vector>

namespace qs::run {

enum class RotaryPairing : std::uint8_t { Interleaved, Halves };

// YaRN context extension (rope_scaling / rope_parameters with rope_type "yarn"), with the
// parameter names of config.json. See docs/models/deepseek_v3.md.
struct YarnScaling {
  double factor = 1.0;
  double original_max_position_embeddings = 0.0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;          // 0: absent
  double mscale_all_dim = 0.0;  // 0: absent
  std::optional<double> attention_factor;
  bool truncate = true;
};

// YaRN's magnitude correction 0.1·m·ln(s) + 1 (1 for s ≤ 1).
double yarn_magnitude(double factor, double mscale);

// What YaRN does to the softmax scale of MLA attention: × yarn_magnitude(factor,
// mscale_all_dim)², on the rotary and the non-rotary dimensions alike. 1 without YaRN.
double softmax_scale_factor(const std::optional<YarnScaling>& yarn);

class RotaryEmbedding {
 public:
  // `dims` rotary dimensions (even) with base `theta`.
  RotaryEmbedding(std::uint64_t dims, double theta, RotaryPairing pairing,
                  const std::optional<YarnScaling>& yarn = std::nullopt);

  std::uint64_t dims() const { return dims_; }
  const std::vector<float>& inverse_frequencies() const { return inverse_frequencies_; }
  float attention_factor() const { return attention_factor_; }
  // x[0..dims) rotated to `position`, in place.
  void rotate(float* x, std::uint64_t position) const;

 private:
  std::uint64_t dims_;
  RotaryPairing pairing_;
  std::vector<float> inverse_frequencies_;  // dims/2
  float attention_factor_ = 1.0f;           // multiplies cos and sin (YaRN)
};

}  // namespace qs::run
