#include "qs/pipeline/pipelined_quantization.h"

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/job/output_directory.h"
#include "qs/ckpt/model/tensor_name.h"
#include "qs/pipeline/layer_item_ledger.h"
#include "qs/pipeline/layer_statistics_board.h"
#include "qs/pipeline/quantized_layer_weights.h"
#include "qs/run/language_model.h"
#include "statistics_collector.h"

namespace qs::pipeline {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Hidden-state copies a layer holds at once: its input, the copy kept for the sequential
// re-run, the normed input and the residual branch.
constexpr std::uint64_t kHiddenCopies = 4;

bool is_expert_gate_or_up(const std::string& module) {
  const auto parsed = parse_tensor_name(module + ".weight");
  return parsed.expert &&
         (parsed.role == TensorRole::ExpertGate || parsed.role == TensorRole::ExpertUp);
}

// The output tensors an earlier run committed, read back from the output directory's shards
// (final names only: a shard exists under its name once committed).
class CommittedShards {
 public:
  explicit CommittedShards(std::filesystem::path directory) : directory_(std::move(directory)) {}

  std::vector<std::byte> read(const std::string& tensor) {
    if (!tensors_.contains(tensor)) scan();
    const auto found = tensors_.find(tensor);
    if (found == tensors_.end())
      throw Error(ErrorClass::Internal, "pipeline.committed_tensor_missing",
                  "the job file says this tensor was committed, but no shard holds it",
                  directory_.string(), tensor);
    return found->second.first->read(*found->second.second);
  }

 private:
  void scan() {
    for (const auto& name : output_entry_names(directory_)) {
      if (!name.ends_with(".safetensors") || name.starts_with(".") || opened_.contains(name))
        continue;
      opened_.insert(name);
      files_.push_back(std::make_unique<SafetensorsFile>(directory_ / name));
      for (const auto& info : files_.back()->tensors())
        tensors_[info.name] = {files_.back().get(), &info};
    }
  }

  std::filesystem::path directory_;
  std::set<std::string> opened_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<const SafetensorsFile*, const TensorInfo*>> tensors_;
};

}  // namespace

struct PipelinedQuantization::State {
  State(const Checkpoint& checkpoint, run::TokenBatch batch, PipelineOptions settings)
      : source(checkpoint),
        tokens(std::move(batch)),
        options(std::move(settings)),
        model(checkpoint, options.device),
        dimensions(model.architecture().dimensions) {}

  std::optional<std::uint64_t> promised_in_features(const std::string& module) const {
    const auto layer = module_layer(module);
    if (!layer) return std::nullopt;
    const bool mtp_layer = *layer >= dimensions.num_hidden_layers;
    if (mtp_layer && (!model.has_mtp() || tokens.seq < 2 ||
                      *layer >= dimensions.num_hidden_layers + dimensions.num_nextn_predict_layers))
      return std::nullopt;
    const auto weight = source.find(module + ".weight");
    if (!weight || weight->info->shape.size() != 2) return std::nullopt;
    return weight->info->shape[1];
  }

  // The statistics key a calibrated module reads: the experts' shared gate/up input under
  // all-experts statistics, else the module itself.
  std::string statistics_key(const std::string& module) const {
    if (options.all_experts && is_expert_gate_or_up(module))
      return shared_gate_up_input(module.substr(0, module.rfind(".experts.") + 8));
    return module;
  }

  std::uint64_t layer_tokens(std::uint32_t layer) const {
    return layer >= dimensions.num_hidden_layers ? tokens.rows * (tokens.seq - 1)
                                                 : tokens.rows * tokens.seq;
  }

  void item_finished(std::size_t item, std::span<const std::span<std::byte>> outputs);
  void item_skipped(std::size_t item);
  void drive();
  void calibration_pass(std::uint32_t layer, run::HiddenStates& hidden, bool calibrate);

  const Checkpoint& source;
  run::TokenBatch tokens;
  PipelineOptions options;
  run::LanguageModel model;
  const ModelDimensions& dimensions;
  std::unique_ptr<LayerStatisticsBoard> board;
  LayerItemLedger ledger;
  std::unique_ptr<QuantizedLayerWeights> quantized;
  QuantizeStageTimes quantizer_times;
  std::map<std::uint32_t, std::set<std::string>> wanted;  // statistics keys per layer
  std::vector<LayerMemory> memory;
  // Per followed item: its output specs and its weights' [out, in] by module.
  std::map<std::size_t, std::vector<TensorSpec>> item_specs;
  std::map<std::size_t, std::map<std::string, Shape>> item_shapes;
  std::unique_ptr<CommittedShards> committed;
  bool attached = false;
  bool has_work = false;  // the plan has calibrated items
  // Driver-only figures, read after it has stopped.
  double forward_seconds = 0.0, statistics_seconds = 0.0, propagation_seconds = 0.0;
  std::uint32_t layers_calibrated = 0;
  std::exception_ptr driver_failure;
};

namespace {

// A followed item's transform: says when it starts (a calibrated one then waits for its
// layer's statistics) and hands its outputs to the job when it is done.
class FollowedTransform final : public Transform {
 public:
  FollowedTransform(std::shared_ptr<const Transform> inner, std::size_t item, bool calibrated,
                    PipelinedQuantization::State* state)
      : inner_(std::move(inner)), item_(item), calibrated_(calibrated), state_(state) {}

  std::string describe() const override { return inner_->describe(); }
  bool is_byte_copy() const override { return inner_->is_byte_copy(); }
  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override;

 private:
  std::shared_ptr<const Transform> inner_;
  std::size_t item_;
  bool calibrated_;
  PipelinedQuantization::State* state_;
};

}  // namespace

std::vector<TensorQuality> FollowedTransform::run(
    std::span<const SourceTensor> sources, std::span<const std::span<std::byte>> outputs) const {
  if (calibrated_) state_->ledger.started(item_);
  auto quality = inner_->run(sources, outputs);
  state_->item_finished(item_, outputs);
  return quality;
}

void PipelinedQuantization::State::item_finished(std::size_t item,
                                                 std::span<const std::span<std::byte>> outputs) {
  if (quantized) {
    std::vector<std::span<const std::byte>> bytes(outputs.begin(), outputs.end());
    quantized->add(item_specs.at(item), bytes, item_shapes.at(item));
  }
  ledger.finished(item);
}

void PipelinedQuantization::State::item_skipped(std::size_t item) {
  if (!ledger.follows(item)) return;
  if (quantized) {
    const auto& specs = item_specs.at(item);
    std::vector<std::vector<std::byte>> read;
    for (const auto& spec : specs) read.push_back(committed->read(spec.name));
    std::vector<std::span<const std::byte>> bytes(read.begin(), read.end());
    quantized->add(specs, bytes, item_shapes.at(item));
  }
  ledger.skipped(item);
}

void PipelinedQuantization::State::calibration_pass(std::uint32_t layer,
                                                    run::HiddenStates& hidden, bool calibrate) {
  const auto& keys = wanted[layer];
  StatisticsCollector collector(layer, dimensions.n_routed_experts, [&](const std::string& key) {
    return calibrate && keys.contains(key);
  });
  // The observer is always there, as in `quantsmith calibrate`: the runner computes the same
  // activations whether or not statistics are wanted.
  run::RunOptions run;
  run.observer = &collector;
  run.all_experts = options.all_experts && calibrate;
  const auto start = Clock::now();
  if (layer < dimensions.num_hidden_layers) {
    model.run_layer(layer, hidden, run);
  } else {  // the MTP layer, on the final hidden states
    model.final_norm(hidden);
    model.mtp_logits(hidden, tokens.ids, run);
  }
  forward_seconds += seconds_since(start) - collector.seconds();
  statistics_seconds += collector.seconds();
  if (calibrate) {
    board->publish(layer, collector.take());
    ++layers_calibrated;
  }
}

void PipelinedQuantization::State::drive() {
  const bool sequential = options.inputs == CalibrationInputs::Sequential;
  std::optional<run::LanguageModel> quantized_model;
  if (sequential) quantized_model.emplace(source, options.device, quantized.get());
  const std::uint32_t last = ledger.last_layer();
  auto hidden = model.embed(tokens.ids, tokens.rows, tokens.seq);
  for (std::uint32_t layer = 0; layer <= last; ++layer) {
    const bool calibrate = ledger.wait_calibration_needed(layer);
    const bool main_layer = layer < dimensions.num_hidden_layers;
    // Sequential: the next layer's inputs come from this layer's quantized weights.
    const bool propagate = sequential && main_layer && layer < last && ledger.has_layer(layer);
    std::optional<run::HiddenStates> inputs;
    if (propagate) inputs = hidden;
    if (calibrate || !propagate) calibration_pass(layer, hidden, calibrate);
    ledger.wait_layer_done(layer);
    board->release(layer);
    if (propagate) {
      const auto start = Clock::now();
      hidden = std::move(*inputs);
      StatisticsCollector none(layer, 0, [](const std::string&) { return false; });
      run::RunOptions run;
      run.observer = &none;
      quantized_model->run_layer(layer, hidden, run);
      propagation_seconds += seconds_since(start);
    }
    if (quantized) quantized->clear(layer);
    if (options.on_layer) options.on_layer(layer + 1, last + 1);
  }
}

PipelinedQuantization::PipelinedQuantization(const Checkpoint& source, run::TokenBatch tokens,
                                             PipelineOptions options)
    : state_(std::make_unique<State>(source, std::move(tokens), std::move(options))) {
  const auto& batch = state_->tokens;
  const std::uint64_t vocabulary = state_->dimensions.vocab_size;
  for (std::uint64_t i = 0; i < batch.ids.size(); ++i)
    if (batch.ids[i] < 0 || static_cast<std::uint64_t>(batch.ids[i]) >= vocabulary)
      throw_bad_input("run.bad_token",
                      fmt::format("calibration token id {} (row {}, position {}) is outside the "
                                  "vocabulary (0..{})",
                                  batch.ids[i], i / batch.seq, i % batch.seq, vocabulary - 1));
  auto* state = state_.get();
  state_->board = std::make_unique<LayerStatisticsBoard>(
      [state](const std::string& module) { return state->promised_in_features(module); });
}

PipelinedQuantization::~PipelinedQuantization() = default;

const CalibrationStatistics& PipelinedQuantization::statistics() const { return *state_->board; }
QuantizeStageTimes& PipelinedQuantization::quantizer_times() { return state_->quantizer_times; }
const std::vector<LayerMemory>& PipelinedQuantization::memory() const { return state_->memory; }
std::uint64_t PipelinedQuantization::token_rows() const {
  return state_->tokens.rows * state_->tokens.seq;
}

void PipelinedQuantization::attach(QuantizePlan& planned) {
  State& state = *state_;
  if (state.attached)
    throw Error(ErrorClass::Internal, "pipeline.attached", "a plan is attached already");
  state.attached = true;
  const bool sequential = state.options.inputs == CalibrationInputs::Sequential;
  std::map<std::string, const TensorDecision*> decision_of;
  for (const auto& decision : planned.decisions) decision_of[decision.tensor] = &decision;
  auto decision_for = [&](const PlanItem& item) { return decision_of.at(item.sources[0].info->name); };

  std::optional<std::uint32_t> last_calibrated;
  for (const auto& item : planned.plan.items)
    if (const auto layer = item_layer(item);
        layer && reads_statistics(*decision_for(item)))
      last_calibrated = std::max(last_calibrated.value_or(0), *layer);
  if (!last_calibrated) return;
  state.has_work = true;

  std::map<std::string, int> pack_bits;
  for (const auto& group : planned.model.integer_groups)
    for (const auto& module : group.modules) pack_bits[module] = group.options.bits;
  if (sequential) state.quantized = std::make_unique<QuantizedLayerWeights>(pack_bits);

  std::map<std::uint32_t, std::map<std::string, std::uint64_t>> statistics_width;
  for (std::size_t i = 0; i < planned.plan.items.size(); ++i) {
    PlanItem& item = planned.plan.items[i];
    const auto layer = item_layer(item);
    if (!layer || *layer > *last_calibrated) continue;
    const TensorDecision& decision = *decision_for(item);
    if (!is_quantizing(decision.action)) continue;
    const bool calibrated = reads_statistics(decision);
    if (!calibrated && !sequential) continue;
    state.ledger.add(i, *layer, calibrated);
    state.item_specs[i] = item.outputs;
    auto& shapes = state.item_shapes[i];
    for (const auto& source : item.sources) {
      const auto parsed = parse_tensor_name(source.info->name);
      if (parsed.parameter != TensorParameter::Weight) continue;
      shapes[parsed.module_path] = source.info->shape;
      if (!calibrated) continue;
      const bool expert = parsed.expert.has_value();
      const std::uint64_t needed = decision.integer.min_tokens;
      if (needed > state.layer_tokens(*layer) && (!expert || state.options.all_experts))
        throw_bad_input(
            "calibration.too_few_tokens",
            fmt::format("rule '{}' needs at least {} calibration tokens per Linear (min_tokens), "
                        "but --calib-tokens gives {} ({} rows of {}); pass more rows or lower "
                        "min_tokens",
                        decision.rule, needed, state.layer_tokens(*layer), state.tokens.rows,
                        state.tokens.seq),
            planned.plan.items[i].sources[0].shard->path().string(), source.info->name);
      const auto key = state.statistics_key(parsed.module_path);
      state.wanted[*layer].insert(key);
      statistics_width[*layer][key] = source.info->shape[1];
      // Routed statistics add the layer's pooled sums (run::LayerStatistics), one per projection.
      if (expert && !state.options.all_experts) {
        const auto prefix = parsed.module_path.substr(0, parsed.module_path.rfind(".experts.") + 8);
        if (parsed.role == TensorRole::ExpertGate)
          statistics_width[*layer][pooled_gate_up_input(prefix)] = source.info->shape[1];
        if (parsed.role == TensorRole::ExpertDown)
          statistics_width[*layer][pooled_down_input(prefix)] = source.info->shape[1];
      }
    }
    item.transform = std::make_shared<FollowedTransform>(item.transform, i, calibrated, &state);
  }
  const std::uint64_t activations =
      state.tokens.rows * state.tokens.seq * state.dimensions.hidden_size * sizeof(float) *
      kHiddenCopies;
  for (const auto& [layer, widths] : statistics_width) {
    LayerMemory memory;
    memory.layer = layer;
    memory.statistics_matrices = widths.size();
    for (const auto& [key, width] : widths) memory.statistics_bytes += width * width * sizeof(double);
    memory.activation_bytes = activations;
    state.memory.push_back(memory);
  }
}

ExecutionReport PipelinedQuantization::run(
    const Plan& plan, ExecutionOptions options,
    const std::function<ExecutionReport(const Plan&, ExecutionOptions)>& execute) {
  State& state = *state_;
  if (!state.has_work) return execute(plan, std::move(options));
  state.committed = std::make_unique<CommittedShards>(options.output_directory);
  auto previous = options.on_item_skipped;
  options.on_item_skipped = [&state, previous](std::size_t item) {
    if (previous) previous(item);
    state.item_skipped(item);
  };
  std::thread driver([&state] {
    try {
      state.drive();
    } catch (const Error& error) {
      if (error.kind() == "pipeline.cancelled") return;
      state.driver_failure = std::current_exception();
      state.board->fail(state.driver_failure);
    } catch (...) {
      state.driver_failure = std::current_exception();
      state.board->fail(state.driver_failure);
    }
  });
  auto stop_driver = [&] {
    state.board->cancel();
    state.ledger.cancel();
    driver.join();
  };
  ExecutionReport report;
  try {
    report = execute(plan, std::move(options));
  } catch (...) {
    stop_driver();
    throw;
  }
  stop_driver();
  if (state.driver_failure && !report.interrupted) std::rethrow_exception(state.driver_failure);
  return report;
}

StageTimes PipelinedQuantization::stage_times(const ExecutionReport& report) const {
  const State& state = *state_;
  StageTimes times;
  times.forward = state.forward_seconds;
  times.statistics = state.statistics_seconds;
  times.factorization = static_cast<double>(state.quantizer_times.factorization_ns.load()) * 1e-9;
  times.sweep = static_cast<double>(state.quantizer_times.sweep_ns.load()) * 1e-9;
  times.propagation = state.propagation_seconds;
  times.write = report.write_seconds;
  times.peak_statistics_bytes = state.board->peak_bytes();
  times.layers_calibrated = state.layers_calibrated;
  return times;
}

}  // namespace qs::pipeline
