#pragma once
// One progress line on stderr for long work: done/total, GB/s, ETA. Redrawn in place on a
// terminal (at most 4 times a second); on a pipe or log, a fresh line every 10 seconds so CI
// logs show progress without flooding. Silent for work that ends within a second.

#include <chrono>
#include <cstdint>
#include <string>

namespace qs::cli {

class ProgressLine {
 public:
  ProgressLine(std::string label, std::uint64_t total_bytes, std::uint64_t total_items = 0);
  // Work counted in steps only (no bytes): "label: 3/5 layers, ETA 2s".
  void set_steps(std::uint64_t total, std::string unit) {
    total_items_ = total;
    unit_ = std::move(unit);
  }
  // The work turned out to be less than planned (one part of a partitioned job).
  void set_totals(std::uint64_t total_bytes, std::uint64_t total_items) {
    total_bytes_ = total_bytes;
    total_items_ = total_items;
  }
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  void update(std::uint64_t done_bytes, std::uint64_t done_items = 0);
  // Clears the in-place line; the caller prints its own summary.
  void finish();
  double elapsed_seconds() const;

 private:
  void draw(bool final_draw);

  std::string label_;
  std::uint64_t total_bytes_;
  std::uint64_t total_items_;
  std::string unit_ = "steps";
  std::uint64_t done_bytes_ = 0;
  std::uint64_t done_items_ = 0;
  bool terminal_;
  bool drawn_ = false;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace qs::cli
