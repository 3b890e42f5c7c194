#pragma once
// What llama.cpp's `llama-perplexity --kl-divergence` reports when comparing a model with its
// reference on the same tokens (docs/models/glm_moe_dsa.md, "Output statistics"), computed from the
// two models' logits: per position the KL divergence KL(P_ref ‖ P_test), whether the top token
// agrees, and Δp = p_test(next) − p_ref(next) for the true next token; the perplexity of each
// model. Also the Jensen–Shannon divergence, for decode steps.

#include <cstdint>
#include <span>
#include <vector>

namespace qs::run {

struct MeanWithError {
  double mean = 0.0;
  double error = 0.0;  // standard error of the mean
};

struct Percentiles {
  double min = 0.0, p01 = 0.0, p05 = 0.0, p10 = 0.0, p25 = 0.0, median = 0.0, p75 = 0.0, p90 = 0.0,
         p95 = 0.0, p99 = 0.0, p999 = 0.0, max = 0.0;
};

struct DivergenceReport {
  std::uint64_t positions = 0;
  MeanWithError kld;
  Percentiles kld_percentiles;
  MeanWithError top1_agreement;  // fraction of positions whose argmax agrees
  MeanWithError delta_p;         // p_test(next) − p_ref(next)
  Percentiles delta_p_percentiles;
  double delta_p_rms = 0.0;
  MeanWithError reference_nll, test_nll;  // nats per token
  double reference_ppl = 0.0, test_ppl = 0.0;
  MeanWithError log_ppl_ratio;  // mean of (nll_test − nll_ref): ln(PPL_test / PPL_ref)
  double ppl_ratio = 0.0;
};

// Accumulates positions; `next_token` < 0 means the position has no known next token (it then
// counts for KLD and top-1 but not for perplexity or Δp).
class DivergenceAccumulator {
 public:
  void add(std::span<const float> reference_logits, std::span<const float> test_logits,
           std::int64_t next_token);
  DivergenceReport report() const;

 private:
  std::vector<double> kld_, delta_p_, reference_nll_, test_nll_, nll_difference_;
  std::uint64_t top1_same_ = 0;
};

// Jensen–Shannon divergence (nats) between the softmax distributions of two logit rows.
double jensen_shannon(std::span<const float> logits_a, std::span<const float> logits_b);

// Index of the largest logit (the first on ties).
std::uint64_t argmax(std::span<const float> logits);

}  // namespace qs::run
