#include "qs/ckpt/job/non_finite_tally.h"

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"

namespace qs {

void NonFiniteTally::scan(const TensorInfo& info, const std::string& file,
                          std::span<const std::byte> bytes) {
  const auto found = count_non_finite_values(info.dtype, bytes);
  if (found.nan == 0 && found.inf == 0) return;
  if (policy_ == NonFinitePolicy::Error)
    throw_bad_input("tensor.non_finite",
                    fmt::format("it holds {} NaN and {} Inf value(s) (of {}); fix the source, or "
                                "pass --nan-policy zero (quantized weights then take 0 for them, "
                                "other tensors are written as they are and reported)",
                                found.nan, found.inf, info.element_count()),
                    file, info.name);
  add({{info.name, found.nan, found.inf}});
}

void NonFiniteTally::add(const std::vector<NonFiniteCount>& counts) {
  for (const auto& count : counts) {
    // Pieces of one streamed tensor arrive in a row.
    if (counts_.empty() || counts_.back().tensor != count.tensor)
      counts_.push_back({count.tensor, 0, 0});
    counts_.back().nan += count.nan;
    counts_.back().inf += count.inf;
  }
}

}  // namespace qs
