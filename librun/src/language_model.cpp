#include "qs/run/language_model.h"

#include <fmt/format.h>

#include <algorithm>

#include "module_names.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/validate/validation.h"
#include "qs/run/tensor_ops.h"

namespace qs::run {

LanguageModel::LanguageModel(const Checkpoint& checkpoint, GemmDevice device,
                             const WeightOverrides* overrides)
    : checkpoint_(checkpoint),
      weights_(checkpoint, device, overrides),
      architecture_(runner_architecture(checkpoint)),
      attention_(make_attention(architecture_, weights_)) {
  // Every tensor the runner reads is sized by config.json: a tensor (or a quantized module's
  // logical shape) that contradicts it would be read out of bounds, so check them all first.
  require_layout_matches_config(checkpoint);
}

HiddenStates LanguageModel::embed(std::span<const std::int32_t> tokens, std::uint64_t batch,
                                  std::uint64_t seq) const {
  const auto table = weights_.linear(module_of(TensorRole::Embed));
  HiddenStates hidden{batch, seq, std::vector<float>(batch * seq * table.cols)};
  for (std::uint64_t r = 0; r < batch * seq; ++r) {
    const std::int32_t token = tokens[r];
    if (token < 0 || static_cast<std::uint64_t>(token) >= table.rows)
      throw_bad_input("run.bad_token",
                      fmt::format("token id {} at position {} is outside the vocabulary (0..{})",
                                  token, r, table.rows - 1));
    std::copy_n(table.values.data() + static_cast<std::uint64_t>(token) * table.cols, table.cols,
                hidden.values.data() + r * table.cols);
  }
  return hidden;
}

void LanguageModel::run_layer(std::uint64_t layer, HiddenStates& hidden, const RunOptions& options,
                              LayerCache* cache) const {
  if (cache && hidden.batch != 1)
    throw Error(ErrorClass::Internal, "run.cache_batch", "a decode cache holds one sequence");
  HiddenStates normed = hidden;
  rms_norm(normed.values, weights_.vector(tensor_of(TensorRole::InputNorm, layer)),
           static_cast<float>(architecture_.dimensions.rms_norm_eps));
  const auto attended = attention_->forward(layer, normed, options, cache);
  for (std::size_t i = 0; i < hidden.values.size(); ++i) hidden.values[i] += attended[i];
  feed_forward(layer, hidden, options);
}

void LanguageModel::final_norm(HiddenStates& hidden) const {
  rms_norm(hidden.values, weights_.vector(tensor_of(TensorRole::FinalNorm, 0)),
           static_cast<float>(architecture_.dimensions.rms_norm_eps));
}

std::vector<float> LanguageModel::logits(const HiddenStates& normed) const {
  // Tied embeddings (tie_word_embeddings): the embedding table is the output projection.
  return linear(
      normed.values, normed.batch * normed.seq,
      weights_.linear(module_of(
          architecture_.dimensions.tie_word_embeddings ? TensorRole::Embed : TensorRole::LmHead)));
}

LanguageModel::Output LanguageModel::forward(std::span<const std::int32_t> tokens,
                                             std::uint64_t batch, std::uint64_t seq,
                                             const RunOptions& options) const {
  HiddenStates hidden = embed(tokens, batch, seq);
  for (std::uint64_t layer = 0; layer < architecture_.dimensions.num_hidden_layers; ++layer)
    run_layer(layer, hidden, options);
  final_norm(hidden);
  return {logits(hidden), std::move(hidden)};
}

std::vector<std::int32_t> LanguageModel::generate(std::span<const std::int32_t> prompt,
                                                  std::uint64_t max_new,
                                                  std::optional<std::int32_t> stop,
                                                  const RunOptions& options) const {
  DecodeCache cache;
  cache.layers.resize(architecture_.dimensions.num_hidden_layers);
  std::vector<std::int32_t> generated;
  std::vector<std::int32_t> next(prompt.begin(), prompt.end());
  while (generated.size() < max_new) {
    HiddenStates hidden = embed(next, 1, next.size());
    for (std::uint64_t layer = 0; layer < architecture_.dimensions.num_hidden_layers; ++layer)
      run_layer(layer, hidden, options, &cache.layers[layer]);
    // Only the last row's logits are needed.
    HiddenStates last{1, 1,
                      std::vector<float>(hidden.values.end() - architecture_.dimensions.hidden_size,
                                         hidden.values.end())};
    final_norm(last);
    const auto scores = logits(last);
    const auto token =
        static_cast<std::int32_t>(std::max_element(scores.begin(), scores.end()) - scores.begin());
    generated.push_back(token);
    if (stop && token == *stop) break;
    next = {token};
  }
  return generated;
}

std::vector<float> LanguageModel::mtp_logits(const HiddenStates& final_hidden,
                                             std::span<const std::int32_t> tokens,
                                             const RunOptions& options) const {
  const auto& d = architecture_.dimensions;
  if (d.num_nextn_predict_layers == 0)
    throw_bad_input("run.no_mtp_layer", "the model has no MTP layer (num_nextn_predict_layers 0)",
                    (checkpoint_.directory() / "config.json").string());
  const std::uint64_t layer = d.num_hidden_layers, width = d.hidden_size;
  const std::uint64_t batch = final_hidden.batch, seq = final_hidden.seq - 1;
  // Draft inputs: the next token's embedding (zero at position 0) and the target's state.
  std::vector<std::int32_t> next(batch * seq);
  for (std::uint64_t b = 0; b < batch; ++b)
    for (std::uint64_t i = 0; i < seq; ++i) next[b * seq + i] = tokens[b * (seq + 1) + i + 1];
  HiddenStates embedded = embed(next, batch, seq);
  HiddenStates state{batch, seq, std::vector<float>(batch * seq * width)};
  for (std::uint64_t b = 0; b < batch; ++b) {
    std::fill_n(embedded.values.data() + b * seq * width, width, 0.0f);
    std::copy_n(final_hidden.values.data() + b * (seq + 1) * width, seq * width,
                state.values.data() + b * seq * width);
  }
  const float eps = static_cast<float>(d.rms_norm_eps);
  rms_norm(embedded.values, weights_.vector(tensor_of(TensorRole::MtpEnorm, layer)), eps);
  rms_norm(state.values, weights_.vector(tensor_of(TensorRole::MtpHnorm, layer)), eps);
  std::vector<float> joined(batch * seq * 2 * width);
  for (std::uint64_t r = 0; r < batch * seq; ++r) {
    std::copy_n(embedded.values.data() + r * width, width, joined.data() + r * 2 * width);
    std::copy_n(state.values.data() + r * width, width, joined.data() + r * 2 * width + width);
  }
  HiddenStates draft{batch, seq,
                     observed_linear(weights_, options.observer,
                                     module_of(TensorRole::MtpEhProj, layer), joined, batch * seq)};
  run_layer(layer, draft, options);
  rms_norm(draft.values, weights_.vector(tensor_of(TensorRole::MtpSharedHeadNorm, layer)), eps);
  return logits(draft);
}

}  // namespace qs::run
