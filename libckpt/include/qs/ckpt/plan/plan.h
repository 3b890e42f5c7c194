#pragma once
// The plan: one row per unit of work, built from headers and config alone, before any tensor
// byte is read (DESIGN.md "plan, then stream"). Every job (quantize, splice, mtp extract) is a
// planner producing a Plan; one executor (executor.h) runs any Plan.
//
// A PlanItem reads one or more source tensors and produces one or more output tensors through
// a Transform. Items with several sources exist because some outputs depend on several inputs
// at once: the members of an engine-fused group (q_a_proj + kv_a_proj_with_mqa, gate_proj +
// up_proj) share one NVFP4 global scale computed from their joint amax.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qs/ckpt/io/safetensors.h"

namespace qs {

class Checkpoint;

// A source tensor's bytes as the executor hands them to a transform.
struct SourceTensor {
  const TensorInfo* info;  // name, dtype, shape (in the source checkpoint's header)
  std::span<const std::byte> bytes;
};

// Quality figures a transform may report per output weight (quantizers do; copies do not).
struct TensorQuality {
  std::string tensor;          // the source weight's name
  double signal_energy = 0.0;  // Σ w²
  double error_energy = 0.0;   // Σ (w − dequantized w)²
  std::uint64_t elements = 0;
  // GPTQ: the layer objective ‖ΔW·X‖² / ‖W·X‖² of the codes written and of round-to-nearest
  // on the same grid; `fallback` says why round-to-nearest was written instead.
  std::optional<double> relative_loss;
  std::optional<double> rtn_relative_loss;
  std::string fallback;
  // GPTQ on a routed expert with fewer calibration tokens than blend_tokens: its statistics
  // were filled up with the layer's pooled expert statistics (qs/quant/blended_statistics.h).
  bool blended = false;
  double snr_db() const;        // 10·log10(signal/error); +inf for an exact result
  double relative_mse() const;  // error/signal (0 when signal is 0)
};

// Makes output bytes from source bytes. Implementations are stateless and thread-safe: the
// executor may run several items' transforms at once. Output buffers arrive sized exactly to
// the item's output specs.
class Transform {
 public:
  virtual ~Transform() = default;
  // For plans and logs: "copy", "cast(F32)", "nvfp4(max, modelopt)".
  virtual std::string describe() const = 0;
  virtual std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                         std::span<const std::span<std::byte>> outputs) const = 0;
  // True when the item's single output is its single source's bytes unchanged: the executor
  // then streams it in bounded chunks instead of holding the whole tensor.
  virtual bool is_byte_copy() const { return false; }
};

// Where a source tensor lives: index into Plan::inputs, the shard file and its header entry.
struct SourceRef {
  std::size_t input = 0;
  const SafetensorsFile* shard = nullptr;
  const TensorInfo* info = nullptr;
};

struct PlanItem {
  std::vector<SourceRef> sources;
  std::shared_ptr<const Transform> transform;
  std::vector<TensorSpec> outputs;  // in the order transform->run fills them
  std::string scheme;               // what the rule chose: "nvfp4", "keep", "f32", ...
  std::string decided_by;           // the rule that chose it, for --dry-run and logs

  std::uint64_t source_bytes() const;
  std::uint64_t output_bytes() const;
  std::uint64_t source_elements() const;
};

struct Plan {
  std::vector<const Checkpoint*> inputs;  // owned by the caller; outlive the plan
  std::vector<PlanItem> items;            // in output order

  // Every output tensor, in order (what the shard writer is told up front).
  std::vector<TensorSpec> output_specs() const;
  std::uint64_t source_bytes() const;
  std::uint64_t output_bytes() const;
};

// Bits per source weight element an item's outputs spend (4.5 for NVFP4 with its scales).
double bits_per_weight(std::uint64_t output_bytes, std::uint64_t source_elements);

// The trivial transforms every planner needs: bytes unchanged, and a float dtype change.
std::shared_ptr<const Transform> make_copy_transform();
// An item writing one source tensor's bytes unchanged under `output_name` (scheme "copy").
PlanItem copy_item(const SourceRef& source, std::string output_name, std::string decided_by);
// Converts between float dtypes (BF16, F16, F32) element by element, round-to-nearest-even.
std::shared_ptr<const Transform> make_cast_transform(DType target);

}  // namespace qs
