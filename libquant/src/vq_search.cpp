// nearest_codewords: the checks, the per-codeword terms every backend shares, and the choice of
// backend (src/ref, src/cpu, src/cuda).

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"
#include "vq_detail.h"
#include "vq_search_core.h"

namespace qs::vq {
namespace detail {

void check_codebook(const Codebook& codebook) {
  if (const std::string problem = vq_tier_problem(codebook.tier); !problem.empty())
    throw_bad_input("vq.codebook", problem);
  const std::uint64_t expected = std::uint64_t{codebook.tier.k} * codebook.tier.d;
  if (codebook.codewords.size() != expected)
    throw_bad_input("vq.codebook",
                    fmt::format("codebook of tier {} holds {} values, not K·d = {}·{} = {}",
                                codebook.tier.name, codebook.codewords.size(), codebook.tier.k,
                                codebook.tier.d, expected));
}

std::vector<float> codeword_terms(const Codebook& codebook, std::span<const float> metric) {
  const std::uint32_t d = codebook.tier.d;
  std::vector<float> terms(codebook.tier.k);
  for (std::uint32_t k = 0; k < codebook.tier.k; ++k)
    terms[k] = core::codeword_term(codebook.codewords.data() + std::uint64_t{k} * d,
                                   metric.empty() ? nullptr : metric.data(), d);
  return terms;
}

}  // namespace detail

void nearest_codewords(std::span<const float> vectors, std::uint64_t count,
                       const Codebook& codebook, std::span<const float> metric,
                       std::span<std::uint32_t> codes, Backend backend) {
  detail::check_codebook(codebook);
  const std::uint64_t d = codebook.tier.d;
  if (vectors.size() != count * d || codes.size() != count ||
      (!metric.empty() && metric.size() != d * d))
    throw Error(ErrorClass::Internal, "vq.shape",
                fmt::format("nearest_codewords: {} values, {} codes, {} metric values for {} "
                            "vectors of {}",
                            vectors.size(), codes.size(), metric.size(), count, d));
  if (count == 0) return;
  const std::vector<float> terms = detail::codeword_terms(codebook, metric);
  switch (backend) {
    case Backend::Reference:
      return detail::nearest_codewords_reference(vectors, count, codebook, metric, terms, codes);
    case Backend::Cpu:
      return detail::nearest_codewords_cpu(vectors, count, codebook, metric, terms, codes);
    case Backend::Cuda:
      return detail::nearest_codewords_cuda(vectors, count, codebook, metric, terms, codes);
  }
}

}  // namespace qs::vq
