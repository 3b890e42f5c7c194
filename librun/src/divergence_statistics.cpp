#include "qs/run/divergence_statistics.h"

#include <algorithm>
#include <cmath>

namespace qs::run {
namespace {

// log-softmax in double: exact enough for KLD of nearly equal distributions.
std::vector<double> log_softmax(std::span<const float> logits) {
  const double largest = *std::max_element(logits.begin(), logits.end());
  double total = 0.0;
  for (float logit : logits) total += std::exp(logit - largest);
  const double log_total = largest + std::log(total);
  std::vector<double> result(logits.size());
  for (std::size_t i = 0; i < logits.size(); ++i) result[i] = logits[i] - log_total;
  return result;
}

MeanWithError mean_with_error(const std::vector<double>& values) {
  if (values.empty()) return {};
  double sum = 0.0;
  for (double value : values) sum += value;
  const double mean = sum / static_cast<double>(values.size());
  double squares = 0.0;
  for (double value : values) squares += (value - mean) * (value - mean);
  const double n = static_cast<double>(values.size());
  return {mean, n > 1 ? std::sqrt(squares / (n - 1) / n) : 0.0};
}

Percentiles percentiles(std::vector<double> values) {
  if (values.empty()) return {};
  std::sort(values.begin(), values.end());
  const auto at = [&](double fraction) {
    // Linear interpolation between closest ranks.
    const double rank = fraction * static_cast<double>(values.size() - 1);
    const auto low = static_cast<std::size_t>(rank);
    const std::size_t high = std::min(low + 1, values.size() - 1);
    return values[low] + (rank - static_cast<double>(low)) * (values[high] - values[low]);
  };
  return {values.front(), at(0.01), at(0.05), at(0.10), at(0.25),  at(0.5),
          at(0.75),       at(0.90), at(0.95), at(0.99), at(0.999), values.back()};
}

}  // namespace

void DivergenceAccumulator::add(std::span<const float> reference_logits,
                                std::span<const float> test_logits, std::int64_t next_token) {
  const auto log_p = log_softmax(reference_logits);
  const auto log_q = log_softmax(test_logits);
  double kld = 0.0;
  for (std::size_t i = 0; i < log_p.size(); ++i) kld += std::exp(log_p[i]) * (log_p[i] - log_q[i]);
  kld_.push_back(std::max(kld, 0.0));
  top1_same_ += argmax(reference_logits) == argmax(test_logits) ? 1 : 0;
  if (next_token < 0) return;
  const auto token = static_cast<std::size_t>(next_token);
  delta_p_.push_back(std::exp(log_q[token]) - std::exp(log_p[token]));
  reference_nll_.push_back(-log_p[token]);
  test_nll_.push_back(-log_q[token]);
  nll_difference_.push_back(log_p[token] - log_q[token]);
}

DivergenceReport DivergenceAccumulator::report() const {
  DivergenceReport report;
  report.positions = kld_.size();
  report.kld = mean_with_error(kld_);
  report.kld_percentiles = percentiles(kld_);
  const double n = static_cast<double>(std::max<std::size_t>(kld_.size(), 1));
  const double agreement = static_cast<double>(top1_same_) / n;
  report.top1_agreement = {agreement, std::sqrt(agreement * (1.0 - agreement) / n)};
  report.delta_p = mean_with_error(delta_p_);
  report.delta_p_percentiles = percentiles(delta_p_);
  double squares = 0.0;
  for (double value : delta_p_) squares += value * value;
  report.delta_p_rms =
      delta_p_.empty() ? 0.0 : std::sqrt(squares / static_cast<double>(delta_p_.size()));
  report.reference_nll = mean_with_error(reference_nll_);
  report.test_nll = mean_with_error(test_nll_);
  report.reference_ppl = std::exp(report.reference_nll.mean);
  report.test_ppl = std::exp(report.test_nll.mean);
  report.log_ppl_ratio = mean_with_error(nll_difference_);
  report.ppl_ratio = std::exp(report.log_ppl_ratio.mean);
  return report;
}

double jensen_shannon(std::span<const float> logits_a, std::span<const float> logits_b) {
  const auto log_p = log_softmax(logits_a);
  const auto log_q = log_softmax(logits_b);
  double divergence = 0.0;
  for (std::size_t i = 0; i < log_p.size(); ++i) {
    if (log_p[i] == log_q[i]) continue;  // contributes exactly 0
    const double p = std::exp(log_p[i]), q = std::exp(log_q[i]);
    const double m = 0.5 * (p + q);
    if (m <= 0.0) continue;
    const double log_m = std::log(m);
    divergence += 0.5 * (p * (log_p[i] - log_m) + q * (log_q[i] - log_m));
  }
  return std::max(divergence, 0.0);
}

std::uint64_t argmax(std::span<const float> logits) {
  return static_cast<std::uint64_t>(std::max_element(logits.begin(), logits.end()) -
                                    logits.begin());
}

}  // namespace qs::run
