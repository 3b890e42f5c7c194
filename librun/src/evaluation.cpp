#include "qs/run/evaluation.h"

#include <fmt/format.h>

#include <cstring>
#include <limits>

#include "qs/ckpt/core/error.h"
#include "qs/run/language_model.h"

namespace qs::run {
namespace {

double mtp_acceptance(const std::vector<float>& logits, const std::vector<float>& mtp,
                      std::uint64_t rows, std::uint64_t seq, std::uint64_t vocab) {
  std::uint64_t accepted = 0, total = 0;
  for (std::uint64_t r = 0; r < rows; ++r)
    for (std::uint64_t i = 0; i + 1 < seq; ++i) {
      const auto draft = argmax({mtp.data() + (r * (seq - 1) + i) * vocab, vocab});
      const auto target = argmax({logits.data() + (r * seq + i + 1) * vocab, vocab});
      accepted += draft == target ? 1 : 0;
      ++total;
    }
  return total ? static_cast<double>(accepted) / static_cast<double>(total) : 0.0;
}

}  // namespace

TokenBatch read_token_batch(const std::filesystem::path& file, const std::string& name,
                            std::uint64_t max_rows) {
  const SafetensorsFile tokens(file);
  const TensorInfo* info = nullptr;
  if (!name.empty()) {
    info = tokens.header().find(name);
  } else if (tokens.tensors().size() == 1) {
    info = &tokens.tensors()[0];
  } else {
    info = tokens.header().find("heldout");
  }
  if (!info)
    throw_bad_input("tokens.not_found",
                    name.empty() ? "several tensors and none named heldout; name one as FILE:NAME"
                                 : "no such tensor",
                    file.string(), name);
  if ((info->dtype != DType::I32 && info->dtype != DType::I64) || info->shape.size() > 2)
    throw_bad_input("tokens.invalid", "token ids must be I32 or I64 [rows, seq] or [seq]",
                    file.string(), info->name);
  TokenBatch batch;
  batch.rows = info->shape.size() == 2 ? info->shape[0] : 1;
  batch.seq = info->shape.empty() ? 0 : info->shape.back();
  if (batch.rows == 0 || batch.seq == 0)
    throw_bad_input("tokens.empty", "the token tensor is empty", file.string(), info->name);
  const auto bytes = tokens.read(*info);
  const std::uint64_t width = info->dtype == DType::I32 ? 4 : 8;
  for (std::uint64_t i = 0; i < info->element_count(); ++i) {
    std::int64_t value = 0;
    if (width == 4) {
      std::int32_t narrow;
      std::memcpy(&narrow, bytes.data() + 4 * i, 4);
      value = narrow;
    } else {
      std::memcpy(&value, bytes.data() + 8 * i, 8);
    }
    // Checked before narrowing: an I64 id of 2^32 + 65 is not token 65. The model checks
    // ids against its vocabulary (LanguageModel::embed); no vocabulary holds these.
    if (value < 0 || value > std::numeric_limits<std::int32_t>::max())
      throw_bad_input("tokens.out_of_range",
                      fmt::format("token id {} at position {} (row {}, column {}) is not a "
                                  "vocabulary index (0..2^31-1)",
                                  value, i, i / batch.seq, i % batch.seq),
                      file.string(), info->name);
    batch.ids.push_back(static_cast<std::int32_t>(value));
  }
  if (max_rows > 0 && max_rows < batch.rows) {
    batch.rows = max_rows;
    batch.ids.resize(batch.rows * batch.seq);
  }
  return batch;
}

TokenBatch read_tokens_argument(const std::string& argument, const std::string& default_tensor,
                                std::uint64_t max_rows) {
  const auto colon = argument.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return read_token_batch(argument, default_tensor, max_rows);
  return read_token_batch(argument.substr(0, colon), argument.substr(colon + 1), max_rows);
}

EvaluationReport evaluate(const Checkpoint& reference, const Checkpoint& test,
                          const TokenBatch& tokens, const EvaluationOptions& options) {
  // Perplexity and the next-token statistics score each position against the token after it:
  // rows of one token have none, and a report over nothing would read PPL 1.
  if (tokens.seq < 2)
    throw_bad_input("eval.no_next_tokens",
                    fmt::format("rows of {} token(s): eval needs at least 2 per row to score a "
                                "next token",
                                tokens.seq));
  const LanguageModel reference_model(reference, options.device),
      test_model(test, options.device, options.test_overrides);
  const auto& dims = reference_model.architecture().dimensions;
  const auto& test_dims = test_model.architecture().dimensions;
  if (dims.family != test_dims.family)
    throw_bad_input("eval.family_mismatch",
                    fmt::format("the models are of different families ({} and {})",
                                reference_model.architecture().family->name,
                                test_model.architecture().family->name),
                    test.directory().string());
  if (dims.vocab_size != test_dims.vocab_size)
    throw_bad_input("eval.vocab_mismatch",
                    fmt::format("the models have different vocabularies ({} and {})",
                                dims.vocab_size, test_dims.vocab_size),
                    test.directory().string());
  const auto progress = [&](const std::string& stage, std::uint64_t done, std::uint64_t total) {
    if (options.on_progress) options.on_progress(stage, done, total);
  };
  // Both models one layer at a time over every row.
  auto reference_hidden = reference_model.embed(tokens.ids, tokens.rows, tokens.seq);
  auto test_hidden = test_model.embed(tokens.ids, tokens.rows, tokens.seq);
  const std::uint64_t layers = dims.num_hidden_layers;
  for (std::uint64_t layer = 0; layer < layers; ++layer) {
    reference_model.run_layer(layer, reference_hidden, {});
    test_model.run_layer(layer, test_hidden, {});
    progress("layers", layer + 1, layers);
  }
  reference_model.final_norm(reference_hidden);
  test_model.final_norm(test_hidden);
  const auto reference_logits = reference_model.logits(reference_hidden);
  const auto test_logits = test_model.logits(test_hidden);
  const std::uint64_t vocab = dims.vocab_size;

  EvaluationReport report;
  DivergenceAccumulator accumulator;
  for (std::uint64_t r = 0; r < tokens.rows; ++r)
    for (std::uint64_t i = 0; i < tokens.seq; ++i) {
      const std::uint64_t row = r * tokens.seq + i;
      const std::int64_t next = i + 1 < tokens.seq ? tokens.ids[row + 1] : -1;
      accumulator.add({reference_logits.data() + row * vocab, vocab},
                      {test_logits.data() + row * vocab, vocab}, next);
    }
  report.divergence = accumulator.report();

  if (dims.num_nextn_predict_layers > 0 && tokens.seq > 1) {
    report.has_mtp = true;
    const auto reference_mtp = reference_model.mtp_logits(reference_hidden, tokens.ids);
    report.reference_mtp_acceptance =
        mtp_acceptance(reference_logits, reference_mtp, tokens.rows, tokens.seq, vocab);
    const auto test_mtp = test_model.mtp_logits(test_hidden, tokens.ids);
    report.test_mtp_acceptance =
        mtp_acceptance(test_logits, test_mtp, tokens.rows, tokens.seq, vocab);
    progress("mtp", 1, 1);
  }

  if (options.decode_steps > 0) {
    // Greedy decode with the reference from the first row's prompt, then both models on the
    // whole sequence: the test model sees the reference's continuation (teacher forcing).
    std::vector<std::int32_t> sequence(
        tokens.ids.begin(), tokens.ids.begin() + static_cast<std::ptrdiff_t>(
                                                     std::min(options.decode_prompt, tokens.seq)));
    for (std::uint64_t step = 0; step < options.decode_steps; ++step) {
      const auto output = reference_model.forward(sequence, 1, sequence.size());
      sequence.push_back(static_cast<std::int32_t>(
          argmax({output.logits.data() + (sequence.size() - 1) * vocab, vocab})));
      progress("decode", step + 1, options.decode_steps);
    }
    const auto reference_out = reference_model.forward(sequence, 1, sequence.size());
    const auto test_out = test_model.forward(sequence, 1, sequence.size());
    std::vector<double> divergences;
    const std::uint64_t first = sequence.size() - options.decode_steps - 1;
    for (std::uint64_t i = first; i + 1 < sequence.size(); ++i) {
      const std::span<const float> a{reference_out.logits.data() + i * vocab, vocab};
      const std::span<const float> b{test_out.logits.data() + i * vocab, vocab};
      divergences.push_back(jensen_shannon(a, b));
      report.decode_top1_same += argmax(a) == argmax(b) ? 1 : 0;
    }
    double sum = 0.0, squares = 0.0;
    for (double value : divergences) {
      sum += value;
      report.decode_js_max = std::max(report.decode_js_max, value);
    }
    const double n = static_cast<double>(divergences.size());
    report.decode_js.mean = sum / n;
    for (double value : divergences)
      squares += (value - report.decode_js.mean) * (value - report.decode_js.mean);
    report.decode_js.error = n > 1 ? std::sqrt(squares / (n - 1) / n) : 0.0;
    report.decode_steps = divergences.size();
  }
  return report;
}

}  // namespace qs::run
