#pragma once
// The calibration statistics file `quantsmith calibrate` writes and calibrated quantizers
// (GPTQ, Hessian-weighted scale search) read: per Linear, the sum of input second moments
// XᵀX (f64, full symmetric [K, K]) and the number of token rows that went into it; per MoE
// layer, how often the router picked each expert.
//
// Layout (all little-endian):
//   "QSCALIB1"                             8-byte magic
//   one zstd frame per stored matrix       its upper triangle, packed row by row
//                                          (row i holds columns i..K-1: K(K+1)/2 values),
//                                          f64 or f32 as the index says
//   index                                  JSON: entries with offsets and sizes, routing, info
//   index length                           u64
// The index's "version" tells the matrix encoding: 2 is the packed upper triangle above, with
// "precision" f64 or f32; 1 (files written before) is the full K·K f64 matrix. Readers accept
// both and always return the full symmetric f64 matrix. f32 halves the file again; it rounds
// each sum to 24 bits, which the quantizers' own f32 Hessians do anyway (docs/algorithms/gptq.md).
// Matrices are compressed one by one so a reader loads only the modules it needs (a GLM-5
// expert's 6144² matrix is 302 MB raw). Under all-experts calibration every routed expert's
// gate_proj and up_proj see the same input (all tokens), so that matrix is stored once and
// the experts' entries point at it (`shared_with`).

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qs/ckpt/plan/calibration_statistics.h"

namespace qs {

enum class StatisticsPrecision : std::uint8_t { F64, F32 };
const char* statistics_precision_name(StatisticsPrecision precision);  // "f64", "f32"
std::optional<StatisticsPrecision> parse_statistics_precision(std::string_view text);

struct CalibrationInfo {
  std::string model;             // source directory, for humans
  std::uint64_t token_rows = 0;  // calibration tokens (sequences × length)
  bool all_experts = false;
  std::string accumulation;  // how XᵀX was summed, for humans
  StatisticsPrecision precision = StatisticsPrecision::F64;  // how the matrices are stored
  std::uint64_t version = 2;  // of the file read (1: full f64 matrices); writers write 2
};

class CalibrationStoreWriter {
 public:
  CalibrationStoreWriter(std::filesystem::path destination, CalibrationInfo info);
  ~CalibrationStoreWriter();
  CalibrationStoreWriter(const CalibrationStoreWriter&) = delete;
  CalibrationStoreWriter& operator=(const CalibrationStoreWriter&) = delete;
  // `second_moments` is K·K, symmetric (only its upper triangle is stored).
  void add(const std::string& module, std::uint64_t in_features, std::uint64_t tokens,
           const std::vector<double>& second_moments, double input_amax = 0.0);
  // An entry whose matrix is `holder`'s (added before).
  void add_shared(const std::string& module, const std::string& holder, std::uint64_t tokens);
  void set_routing(std::uint64_t layer, std::vector<std::uint64_t> expert_counts);
  // Writes the index and renames the file into place.
  void commit();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

class CalibrationStore final : public CalibrationStatistics {
 public:
  // Throws BadInput "calibration.invalid" naming the file when it is not one of ours, or is
  // truncated (an entry's frame outside the file).
  static CalibrationStore open(const std::filesystem::path& path);
  const CalibrationInfo& info() const { return info_; }
  const std::vector<CalibrationEntry>& entries() const { return entries_; }
  const CalibrationEntry* find(const std::string& module) const override;
  // XᵀX of `module` (K·K f64, full symmetric), through `shared_with`. Throws
  // "calibration.missing_module"; a frame that does not decode is "calibration.invalid".
  std::vector<double> second_moments(const std::string& module) const override;
  const std::map<std::uint64_t, std::vector<std::uint64_t>>& routing() const { return routing_; }

 private:
  std::filesystem::path path_;
  CalibrationInfo info_;
  std::vector<CalibrationEntry> entries_;
  std::map<std::uint64_t, std::vector<std::uint64_t>> routing_;
};

}  // namespace qs
