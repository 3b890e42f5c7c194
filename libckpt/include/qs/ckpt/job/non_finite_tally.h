#pragma once
// NaN and Inf in every tensor a job reads, counted while its bytes are in cache (the executor
// scans each source, or each piece of a streamed copy, before its transform runs). Quantizers
// apply --nan-policy to their weights; this covers the tensors they never see (norms, kept
// Linears, embeddings) and reports them all.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "qs/ckpt/io/safetensors.h"
#include "qs/ckpt/io/shard_scan.h"

namespace qs {

enum class NonFinitePolicy : std::uint8_t {
  Report,  // count and report (splice, mtp extract: they copy what they are given)
  Error,   // BadInput "tensor.non_finite" naming the first tensor that holds one
};

class NonFiniteTally {
 public:
  explicit NonFiniteTally(NonFinitePolicy policy) : policy_(policy) {}

  // Counts `bytes` (all of `info`'s tensor or a piece of it) from `file`.
  void scan(const TensorInfo& info, const std::string& file, std::span<const std::byte> bytes);

  // Adds counts another tally made (a transform worker's, for one item or piece), in order.
  void add(const std::vector<NonFiniteCount>& counts);

  // Tensors with at least one NaN or Inf, in the order they were first seen.
  const std::vector<NonFiniteCount>& counts() const { return counts_; }

 private:
  NonFinitePolicy policy_;
  std::vector<NonFiniteCount> counts_;
};

}  // namespace qs
