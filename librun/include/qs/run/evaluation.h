#pragma once
// `quantsmith eval`: a test model against its reference on the same tokens. Both models are
// advanced one decoder layer at a time over the whole token batch, so only one layer of each
// is in memory at any moment.

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/run/divergence_statistics.h"
#include "qs/run/weight_loader.h"

namespace qs::run {

struct TokenBatch {
  std::uint64_t rows = 0;
  std::uint64_t seq = 0;
  std::vector<std::int32_t> ids;  // [rows, seq]
};

// Reads an I32/I64 [rows, seq] tensor (`name`, or the only/`heldout` tensor when empty) from a
// safetensors file; `max_rows` > 0 keeps the first rows. Throws BadInput "tokens.*", among them
// "tokens.out_of_range" for an id (of either dtype) that is negative or above 2^31-1.
TokenBatch read_token_batch(const std::filesystem::path& file, const std::string& name,
                            std::uint64_t max_rows);

// The same from a command-line argument "FILE" or "FILE:TENSOR" (`default_tensor` when no
// tensor is named; empty means the only tensor, or heldout).
TokenBatch read_tokens_argument(const std::string& argument, const std::string& default_tensor,
                                std::uint64_t max_rows);

struct EvaluationReport {
  DivergenceReport divergence;
  // MTP acceptance: the draft's top-1 at i equals the model's own top-1 at i+1.
  double reference_mtp_acceptance = 0.0;
  double test_mtp_acceptance = 0.0;
  bool has_mtp = false;
  // Jensen–Shannon divergence over greedy decode steps of the reference (the test model
  // teacher-forced on the reference's continuation).
  MeanWithError decode_js;
  double decode_js_max = 0.0;
  std::uint64_t decode_steps = 0;
  std::uint64_t decode_top1_same = 0;
};

struct EvaluationOptions {
  std::uint64_t decode_prompt = 32;  // prompt length (from the first row) for the decode check
  std::uint64_t decode_steps = 32;   // 0 skips it
  GemmDevice device = GemmDevice::Cpu;
  // Weights that stand in for some of the test checkpoint's Linears (weight_loader.h): a
  // quality study fake-quantizes modules in memory and evaluates without writing a checkpoint.
  const WeightOverrides* test_overrides = nullptr;
  std::function<void(const std::string& stage, std::uint64_t done, std::uint64_t total)>
      on_progress;
};

// Throws BadInput "eval.vocab_mismatch" when the two vocabularies differ, "eval.no_next_tokens"
// for rows of fewer than 2 tokens.
EvaluationReport evaluate(const Checkpoint& reference, const Checkpoint& test,
                          const TokenBatch& tokens, const EvaluationOptions& options);

}  // namespace qs::run
