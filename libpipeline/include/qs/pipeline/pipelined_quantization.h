#pragma once
// The layer-pipelined calibrated quantize job (`quantsmith quantize --calib-tokens`): one
// command that calibrates and quantizes a model layer by layer, never holding more than one
// decoder layer's statistics.
//
//   driver thread:    embed → for each layer L: calibration pass (forward with an observer) →
//                     publish L's statistics → wait for L's items → release → [sequential:
//                     re-run L with its quantized weights] → L+1
//   executor:         the plan as always; a calibrated transform of layer L waits inside run()
//                     for L's statistics (LayerStatisticsBoard), so uncalibrated items stream
//                     as before and the plan still decides every tensor.
//
// Sequential inputs (the default, as llm-compressor's sequential pipeline and GPTQModel do):
// layer L+1 is calibrated on what the already-quantized layers compute. Layer L's calibration
// pass runs with its original weights and collects all of its statistics; then its quantized
// weights (the items' output bytes, decoded as a reader of the checkpoint would) replace the
// originals and L is run again on the same inputs to give L+1's. Original inputs: every layer
// is calibrated on the BF16 model's activations, and the output is byte-identical to
// `calibrate --out S` + `quantize --calib S` with the same tokens and expert mode.
//
// Resume: the executor resumes per shard. Items whose outputs an earlier run committed are
// reported skipped; the driver still runs the forward through their layers to recover the
// activations at the first unfinished layer (sequential: with the quantized weights read back
// from the committed shards; original: the BF16 weights), skipping the calibration pass of a
// layer whose calibrated items are all committed. Transforms are deterministic, so the
// result is byte-identical to an uninterrupted run.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/job/executor.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/quant/quantize_transforms.h"
#include "qs/run/evaluation.h"

namespace qs::pipeline {

enum class CalibrationInputs : std::uint8_t { Sequential, Original };

struct PipelineOptions {
  CalibrationInputs inputs = CalibrationInputs::Sequential;
  // Every token through every routed expert for the statistics (one gate/up matrix per layer),
  // or only the tokens the router picks (a matrix per expert; unpicked experts round to
  // nearest).
  bool all_experts = true;
  run::GemmDevice device = run::GemmDevice::Cpu;
  // After each layer: layers done, layers in all.
  std::function<void(std::uint32_t done, std::uint32_t total)> on_layer;
};

// What one layer of the job holds at once, from the plan (before any work).
struct LayerMemory {
  std::uint32_t layer = 0;
  std::size_t statistics_matrices = 0;  // shared ones count once
  std::uint64_t statistics_bytes = 0;  // the XᵀX matrices (K·K f64) the layer's items read
  std::uint64_t activation_bytes = 0;  // hidden states in flight
  std::uint64_t total() const { return statistics_bytes + activation_bytes; }
};

// Cumulative seconds per stage (stages overlap: the driver's forward runs beside the
// executor's writes).
struct StageTimes {
  double forward = 0.0;        // calibration passes, without the statistics sums
  double statistics = 0.0;     // summing XᵀX
  double factorization = 0.0;  // GPTQ: preparing Hessians
  double sweep = 0.0;          // GPTQ: column sweeps
  double propagation = 0.0;    // sequential: re-running layers with their quantized weights
  double write = 0.0;          // the executor's writer
  std::uint64_t peak_statistics_bytes = 0;
  std::uint32_t layers_calibrated = 0;
};

class PipelinedQuantization {
 public:
  // Checks the tokens against the vocabulary (BadInput "run.bad_token") before any work.
  PipelinedQuantization(const Checkpoint& source, run::TokenBatch tokens, PipelineOptions options);
  ~PipelinedQuantization();
  PipelinedQuantization(const PipelinedQuantization&) = delete;
  PipelinedQuantization& operator=(const PipelinedQuantization&) = delete;

  // What the planner and the calibrated transforms read (plan_quantization's `calibration`).
  const CalibrationStatistics& statistics() const;
  // Where GPTQ transforms add their stage times (QuantizerSettings::stage_times).
  QuantizeStageTimes& quantizer_times();

  // Follows the plan's decoder-layer items (their transforms are wrapped; describe() is
  // unchanged). Throws BadInput "calibration.too_few_tokens" when a GPTQ rule's min_tokens
  // exceeds the calibration tokens. Once, before run().
  void attach(QuantizePlan& planned);
  // Per layer that has calibrated items.
  const std::vector<LayerMemory>& memory() const;
  std::uint64_t token_rows() const;

  // Runs the plan with `execute` (the executor, with whatever progress line and Ctrl-C
  // handling the caller gives it) while the driver calibrates layer after layer. An error in
  // either ends both: the driver's reaches the waiting transforms and so the executor; the
  // executor's cancels the driver.
  ExecutionReport run(const Plan& plan, ExecutionOptions options,
                      const std::function<ExecutionReport(const Plan&, ExecutionOptions)>& execute);
  StageTimes stage_times(const ExecutionReport& report) const;

  struct State;  // the job's shared state (its wrapped transforms point at it)

 private:
  std::unique_ptr<State> state_;
};

}  // namespace qs::pipeline
