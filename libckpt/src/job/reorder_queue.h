#pragma once
// The hand-over from several transform workers to the one writer: workers finish items in any
// order, the writer takes them in the order the reader numbered them. This is what keeps the
// output bytes independent of the number of workers (the writer fills shards in plan order).

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>

namespace qs::detail {

template <typename T>
class ReorderQueue {
 public:
  // `sequence` is the value's place in read order; every number from 0 up arrives once.
  void push(std::uint64_t sequence, T value) {
    {
      std::lock_guard lock(mutex_);
      waiting_.emplace(sequence, std::move(value));
    }
    changed_.notify_all();
  }

  // The next value in read order, waiting for it; nullopt once closed and it is not there
  // (closed early on a failure: later values stay behind, unwritten).
  std::optional<T> pop() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return closed_ || next_ready(); });
    if (!next_ready()) return std::nullopt;
    auto node = waiting_.extract(waiting_.begin());
    ++next_;
    return std::move(node.mapped());
  }

  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    changed_.notify_all();
  }

 private:
  bool next_ready() const { return !waiting_.empty() && waiting_.begin()->first == next_; }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::uint64_t, T> waiting_;
  std::uint64_t next_ = 0;
  bool closed_ = false;
};

}  // namespace qs::detail
