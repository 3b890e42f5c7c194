#include "progress_line.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace qs::cli {
namespace {

std::string format_duration(double seconds) {
  auto total = static_cast<long long>(seconds + 0.5);
  if (total >= 3600) return fmt::format("{}h{:02d}m", total / 3600, (total % 3600) / 60);
  if (total >= 60) return fmt::format("{}m{:02d}s", total / 60, total % 60);
  return fmt::format("{}s", total);
}

}  // namespace

ProgressLine::ProgressLine(std::string label, std::uint64_t total_bytes, std::uint64_t total_items)
    : label_(std::move(label)),
      total_bytes_(total_bytes),
      total_items_(total_items),
      terminal_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressLine::~ProgressLine() { finish(); }

double ProgressLine::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressLine::update(std::uint64_t done_bytes, std::uint64_t done_items) {
  done_bytes_ = done_bytes;
  done_items_ = done_items;
  auto now = std::chrono::steady_clock::now();
  auto since_start = now - start_;
  auto since_draw = now - last_draw_;
  auto interval = terminal_ ? std::chrono::milliseconds(250) : std::chrono::milliseconds(10000);
  if (since_start < std::chrono::seconds(1) || since_draw < interval) return;
  last_draw_ = now;
  draw(false);
}

void ProgressLine::draw(bool final_draw) {
  double seconds = elapsed_seconds();
  if (total_bytes_ == 0) {  // work counted in steps (layers), not bytes
    std::string text = fmt::format("{}: {}/{} {}", label_, done_items_, total_items_, unit_);
    if (!final_draw && done_items_ > 0 && total_items_ > done_items_)
      text += ", ETA " + format_duration(seconds / static_cast<double>(done_items_) *
                                         static_cast<double>(total_items_ - done_items_));
    std::fprintf(stderr, terminal_ ? "\r\033[K%s" : "%s\n", text.c_str());
    std::fflush(stderr);
    drawn_ = true;
    return;
  }
  double rate = seconds > 0 ? static_cast<double>(done_bytes_) / seconds : 0.0;
  std::string text =
      fmt::format("{}: {:.2f}/{:.2f} GB", label_, done_bytes_ / 1e9, total_bytes_ / 1e9);
  if (total_items_ > 0) text += fmt::format(", {}/{} tensors", done_items_, total_items_);
  text += fmt::format(", {:.2f} GB/s", rate / 1e9);
  if (!final_draw && rate > 0 && total_bytes_ > done_bytes_)
    text += ", ETA " + format_duration(static_cast<double>(total_bytes_ - done_bytes_) / rate);
  if (terminal_)
    std::fprintf(stderr, "\r\033[K%s", text.c_str());
  else
    std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressLine::finish() {
  if (finished_) return;
  finished_ = true;
  if (drawn_ && terminal_) std::fprintf(stderr, "\r\033[K");
}

}  // namespace qs::cli
