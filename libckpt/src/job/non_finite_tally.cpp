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
  // Pieces of one streamed tensor arrive in a row.
  if (counts_.empty() || counts_.back().tensor != info.name) counts_.push_back({info.name, 0, 0});
  counts_.back().nan += found.nan;
  counts_.back().inf += found.inf;
}

}  // namespace qs
