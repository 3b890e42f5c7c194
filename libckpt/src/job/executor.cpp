#include "qs/ckpt/job/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <latch>
#include <mutex>
#include <optional>
#include <thread>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/job/job_state.h"
#include "qs/ckpt/job/output_layout.h"
#include "qs/ckpt/job/partitioned_job.h"
#include "qs/ckpt/io/shard_scan.h"
#include "reorder_queue.h"

namespace qs {
namespace {

// Copies move through the pipeline in pieces of this size, so a 2 GB embedding does not need
// 2 GB of buffer.
constexpr std::uint64_t kCopyChunkBytes = 64ull << 20;

// Bytes admitted into the pipeline and not yet written. acquire() blocks while admitting
// would exceed the limit, except when nothing is in flight: an item larger than the whole
// budget still runs, alone.
class ByteBudget {
 public:
  explicit ByteBudget(std::uint64_t limit) : limit_(limit) {}

  // False when the run was aborted while waiting.
  bool acquire(std::uint64_t bytes) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock,
                  [&] { return aborted_ || in_flight_ == 0 || in_flight_ + bytes <= limit_; });
    if (aborted_) return false;
    in_flight_ += bytes;
    peak_ = std::max(peak_, in_flight_);
    return true;
  }
  void release(std::uint64_t bytes) {
    {
      std::lock_guard lock(mutex_);
      in_flight_ -= bytes;
    }
    changed_.notify_all();
  }
  void abort() {
    {
      std::lock_guard lock(mutex_);
      aborted_ = true;
    }
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::uint64_t limit_;
  std::uint64_t in_flight_ = 0;
  std::uint64_t peak_ = 0;
  bool aborted_ = false;
};

template <typename T>
class ClosableQueue {
 public:
  void push(T value) {
    {
      std::lock_guard lock(mutex_);
      items_.push_back(std::move(value));
    }
    changed_.notify_one();
  }
  // nullopt once closed and drained.
  std::optional<T> pop() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return closed_ || !items_.empty(); });
    if (items_.empty()) return std::nullopt;
    T value = std::move(items_.front());
    items_.pop_front();
    return value;
  }
  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<T> items_;
  bool closed_ = false;
};

// One item, or one chunk of a copied item, on its way through the pipeline.
struct Packet {
  std::uint64_t sequence = 0;  // its place in read order, which the writer restores
  std::size_t item = 0;
  bool chunk = false;  // a piece of a byte copy: `outputs[0]` holds it, no transform runs
  bool last_chunk = true;
  bool skipped = false;  // done by an earlier run: nothing to read or write
  std::uint64_t reserved_bytes = 0;
  std::uint64_t source_bytes = 0;
  std::vector<std::vector<std::byte>> sources;
  std::vector<std::vector<std::byte>> outputs;
  std::vector<TensorQuality> quality;
  std::vector<NonFiniteCount> non_finite;  // in the tensors it read
  // What its transform (or the NaN scan) threw: raised by the writer when the packet's turn
  // comes, so the job fails on the first bad item in plan order, whatever the worker count.
  std::exception_ptr error;
};

// Where each output tensor goes, which shards are already done, and the open shard writer.
class ShardRouter {
 public:
  ShardRouter(std::filesystem::path directory, std::vector<std::vector<TensorSpec>> shard_plan,
              JobState& job)
      : directory_(std::move(directory)), plan_(std::move(shard_plan)), job_(job) {
    for (std::size_t shard = 0; shard < plan_.size(); ++shard)
      for (std::size_t i = 0; i < plan_[shard].size(); ++i) shard_of_tensor_.push_back(shard);
  }

  std::size_t shard_of(std::size_t tensor_index) const { return shard_of_tensor_[tensor_index]; }
  // Committed by an earlier run, or another part's to write.
  bool shard_done(std::size_t shard) const {
    return !job_.owns(shard) || job_.shard_done(shard);
  }
  std::size_t shard_count() const { return plan_.size(); }
  const std::vector<std::vector<TensorSpec>>& plan() const { return plan_; }

  // Bytes of output tensor `tensor_index`, possibly in several calls. Returns true when a
  // shard was committed by this call.
  bool write(std::size_t tensor_index, std::span<const std::byte> bytes) {
    const std::size_t shard = shard_of(tensor_index);
    if (shard_done(shard)) return false;
    if (!writer_ || open_shard_ != shard) {
      writer_ = std::make_unique<SafetensorsWriter>(
          directory_ / shard_file_name(shard, plan_.size()), plan_[shard], output_shard_metadata());
      open_shard_ = shard;
      // The digest covers the whole file: the header the writer wrote, then every byte.
      digest_ = std::make_unique<Xxh3Digest>();
      const std::string header = build_safetensors_header(plan_[shard], output_shard_metadata());
      digest_->update(std::as_bytes(std::span(header.data(), header.size())));
    }
    writer_->write(bytes);
    digest_->update(bytes);
    if (writer_->remaining_bytes() != 0) return false;
    writer_->commit();
    writer_.reset();
    job_.mark_shard_done(shard, digest_->hex());
    ++shards_written_;
    return true;
  }
  std::size_t shards_written() const { return shards_written_; }

 private:
  std::filesystem::path directory_;
  std::vector<std::vector<TensorSpec>> plan_;
  JobState& job_;
  std::vector<std::size_t> shard_of_tensor_;
  std::unique_ptr<SafetensorsWriter> writer_;
  std::unique_ptr<Xxh3Digest> digest_;
  std::size_t open_shard_ = 0;
  std::size_t shards_written_ = 0;
};

// Error propagation between the three threads: the first failure wins and stops the rest.
class FirstFailure {
 public:
  void record(std::exception_ptr error) {
    std::lock_guard lock(mutex_);
    if (!error_) error_ = std::move(error);
  }
  bool failed() const {
    std::lock_guard lock(mutex_);
    return error_ != nullptr;
  }
  void rethrow_if_failed() const {
    std::lock_guard lock(mutex_);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  mutable std::mutex mutex_;
  std::exception_ptr error_;
};

// Temporaries a killed writer left of `names` (other names are not ours to remove: in a
// partitioned job, another worker may be writing them).
void remove_stale_temporaries(const std::filesystem::path& directory,
                              const std::vector<std::string>& names) {
  for (const auto& name : output_entry_names(directory)) {
    if (!is_temporary_file_name(name)) continue;
    const auto target = name.substr(1, name.find(".tmp-") - 1);
    if (std::find(names.begin(), names.end(), target) != names.end())
      remove_output_entry(directory / name);
  }
}

// What this process claims in OUT: the whole job, or one part of it.
struct Claim {
  std::optional<OutputDirectory> whole;
  std::optional<PartClaim> part;
  std::optional<PartAssignment> assignment;
};

// The shards of `partition` under the balanced split of the whole plan.
PartAssignment assignment_of(const Plan& plan,
                             const std::vector<std::vector<TensorSpec>>& shard_plan,
                             const Partition& partition) {
  const auto part_of = assign_shards(shard_costs(plan, shard_plan), partition.count);
  PartAssignment assignment{partition, {}};
  for (std::size_t shard = 0; shard < part_of.size(); ++shard)
    if (part_of[shard] == partition.index) assignment.shards.push_back(shard);
  return assignment;
}

void read_sources(const PlanItem& item, Packet& packet) {
  for (const auto& source : item.sources) {
    packet.sources.push_back(source.shard->read(*source.info));
  }
}

void run_transform(const PlanItem& item, Packet& packet) {
  std::vector<SourceTensor> sources;
  for (std::size_t i = 0; i < item.sources.size(); ++i)
    sources.push_back({item.sources[i].info, packet.sources[i]});
  std::vector<std::span<std::byte>> outputs;
  for (const auto& spec : item.outputs) {
    packet.outputs.emplace_back(spec.byte_size());
    outputs.push_back(packet.outputs.back());
  }
  packet.quality = item.transform->run(sources, outputs);
  packet.sources.clear();
}

// Every tensor the item read (or the piece of a copy the packet holds), for NaN and Inf.
void tally_sources(const PlanItem& item, Packet& packet, NonFinitePolicy policy) {
  NonFiniteTally tally(policy);
  if (packet.chunk) {
    tally.scan(*item.sources[0].info, item.sources[0].shard->path().string(), packet.outputs[0]);
  } else {
    for (std::size_t i = 0; i < item.sources.size(); ++i)
      tally.scan(*item.sources[i].info, item.sources[i].shard->path().string(), packet.sources[i]);
  }
  packet.non_finite = tally.counts();
}

// One worker's share of the transforms: the next packet read, scanned and transformed, handed
// to the writer under its read-order number. Failures travel inside the packet.
void transform_packets(const Plan& plan, NonFinitePolicy policy, ClosableQueue<Packet>& read_queue,
                       detail::ReorderQueue<Packet>& write_queue,
                       const std::atomic<bool>& stopping) {
  while (auto packet = read_queue.pop()) {
    if (stopping) break;
    try {
      if (!packet->skipped) tally_sources(plan.items[packet->item], *packet, policy);
      if (!packet->chunk && !packet->skipped) run_transform(plan.items[packet->item], *packet);
    } catch (...) {
      packet->error = std::current_exception();
    }
    const auto sequence = packet->sequence;
    write_queue.push(sequence, std::move(*packet));
  }
}

}  // namespace

ExecutionReport execute_plan(const Plan& plan, const ExecutionOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const auto& directory = options.output_directory;
  const auto mode = output_mode_from_flags(options.resume, options.force);

  auto specs = plan.output_specs();
  auto shard_plan = split_into_shards(specs, options.max_shard_bytes);
  if (shard_plan.empty()) shard_plan.emplace_back();
  // The fingerprint leaves the partition out: every part, and a single run, share it.
  const auto layout = make_output_layout(
      plan_fingerprint(plan,
                       fmt::format("{}|shard={}", options.fingerprint, options.max_shard_bytes),
                       options.fingerprint_source_times),
      shard_plan, options.extra_files);

  ExecutionReport report;
  report.total_shards = shard_plan.size();
  // Checked, locked and (with force) cleared before anything is written; held to the end.
  Claim claim;
  if (options.partition) {
    if (options.claimed_output)
      throw Error(ErrorClass::Internal, "executor.partition_claimed",
                  "a partitioned run claims its output itself", directory.string());
    claim.assignment = assignment_of(plan, shard_plan, *options.partition);
    claim.part.emplace(PartClaim::claim(directory, mode, layout, *options.partition));
    report.part_shards = claim.assignment->shards.size();
    if (claim.part->already_finalized()) {
      report.already_finalized = true;
      report.seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return report;
    }
  } else if (!options.claimed_output) {
    claim.whole.emplace(OutputDirectory::claim(directory, mode));
  }

  JobState job = JobState::open_or_create(directory, layout.fingerprint, shard_plan, layout.files,
                                          claim.assignment ? &*claim.assignment : nullptr);
  {
    // Only our own files' temporaries: other parts' workers may be writing theirs.
    std::vector<std::string> own;
    if (claim.assignment) {
      own.push_back(part_job_file_name(claim.assignment->partition));
      for (const auto shard : claim.assignment->shards) own.push_back(layout.shard_files[shard]);
    } else {
      own = layout.files;
      own.emplace_back(kJobFileName);
    }
    remove_stale_temporaries(directory, own);
  }

  report.shards_resumed = job.done_shard_count();
  report.redone_shards = job.discarded_shards();

  ShardRouter router(directory, shard_plan, job);
  // The first output tensor index of every item, whether any of its outputs still needs
  // writing, and whether it is this process's work at all (a part owns only some shards).
  std::vector<std::size_t> first_output(plan.items.size());
  std::vector<bool> needed(plan.items.size());
  std::vector<bool> owned(plan.items.size());
  ExecutionProgress progress;
  {
    std::size_t index = 0;
    for (std::size_t i = 0; i < plan.items.size(); ++i) {
      first_output[i] = index;
      bool any = false, mine = plan.items[i].outputs.empty();
      for (std::size_t k = 0; k < plan.items[i].outputs.size(); ++k) {
        any = any || !router.shard_done(router.shard_of(index + k));
        mine = mine || job.owns(router.shard_of(index + k));
      }
      needed[i] = any;
      owned[i] = mine;
      if (mine) {
        progress.total_source_bytes += plan.items[i].source_bytes();
        ++progress.total_items;
      }
      index += plan.items[i].outputs.size();
    }
  }
  progress.total_shards = job.owned_shard_count();
  progress.done_shards = job.done_shard_count();

  ByteBudget budget(options.max_buffer_bytes);
  ClosableQueue<Packet> read_queue;
  detail::ReorderQueue<Packet> write_queue;
  FirstFailure failure;
  std::atomic<bool> stopping{false};
  const auto abort_all = [&] {
    stopping = true;
    budget.abort();
    read_queue.close();
    write_queue.close();
  };

  // Every worker bound to its device before the first read, so a device that cannot be used
  // fails the job before any work.
  const std::size_t worker_count = std::max<std::size_t>(options.transform_workers, 1);
  std::latch workers_started(static_cast<std::ptrdiff_t>(worker_count));
  std::uint64_t next_sequence = 0;  // the reader's count of packets, the writer's order

  std::thread reader([&] {
    workers_started.wait();
    try {
      for (std::size_t i = 0; i < plan.items.size() && !stopping; ++i) {
        const PlanItem& item = plan.items[i];
        if (!needed[i]) {  // all its outputs are in shards an earlier run committed
          if (options.on_item_skipped) options.on_item_skipped(i);
          Packet skipped;
          skipped.skipped = true;
          skipped.sequence = next_sequence++;
          skipped.item = i;
          skipped.source_bytes = item.source_bytes();
          read_queue.push(std::move(skipped));
          continue;
        }
        if (item.transform->is_byte_copy() && item.sources.size() == 1) {
          const auto& source = item.sources[0];
          const std::uint64_t size = source.info->byte_size();
          std::uint64_t offset = 0;
          do {
            const std::uint64_t piece = std::min(kCopyChunkBytes, size - offset);
            if (!budget.acquire(piece)) return;
            Packet packet;
            packet.sequence = next_sequence++;
            packet.item = i;
            packet.chunk = true;
            packet.reserved_bytes = piece;
            packet.source_bytes = piece;
            packet.outputs.emplace_back(piece);
            source.shard->read_part(*source.info, offset, packet.outputs[0]);
            offset += piece;
            packet.last_chunk = offset == size;
            read_queue.push(std::move(packet));
          } while (offset < size && !stopping);
          continue;
        }
        const std::uint64_t reserve = item.source_bytes() + item.output_bytes();
        if (!budget.acquire(reserve)) return;
        Packet packet;
        packet.sequence = next_sequence++;
        packet.item = i;
        packet.reserved_bytes = reserve;
        packet.source_bytes = item.source_bytes();
        read_sources(item, packet);
        read_queue.push(std::move(packet));
      }
    } catch (...) {
      failure.record(std::current_exception());
      abort_all();
    }
    read_queue.close();
  });

  NonFiniteTally non_finite(options.non_finite);
  std::thread writer([&] {
    try {
      while (auto packet = write_queue.pop()) {
        if (stopping) break;
        if (packet->error) std::rethrow_exception(packet->error);
        non_finite.add(packet->non_finite);
        const auto write_start = std::chrono::steady_clock::now();
        bool committed = false;
        if (packet->chunk) {
          committed = router.write(first_output[packet->item], packet->outputs[0]);
        } else if (!packet->skipped) {
          for (std::size_t k = 0; k < packet->outputs.size(); ++k)
            committed =
                router.write(first_output[packet->item] + k, packet->outputs[k]) || committed;
          report.quality.insert(report.quality.end(), packet->quality.begin(),
                                packet->quality.end());
        }
        report.write_seconds +=
            std::chrono::duration<double>(std::chrono::steady_clock::now() - write_start).count();
        budget.release(packet->reserved_bytes);
        if (!packet->skipped) report.bytes_read += packet->source_bytes;
        if (owned[packet->item]) {
          progress.done_source_bytes += packet->source_bytes;
          if (!packet->chunk || packet->last_chunk) ++progress.done_items;
        }
        if (committed) {
          progress.done_shards = job.done_shard_count();
          if (options.stop_requested && options.stop_requested->load()) {
            report.interrupted = true;
            abort_all();
          }
        }
        if (options.on_progress) options.on_progress(progress);
      }
    } catch (...) {
      failure.record(std::current_exception());
      abort_all();
    }
  });

  // The transform workers (they parallelise internally too).
  std::vector<std::thread> workers;
  for (std::size_t w = 0; w < worker_count; ++w)
    workers.emplace_back([&, w] {
      try {
        if (options.on_worker_start) options.on_worker_start(w);
      } catch (...) {
        failure.record(std::current_exception());
        abort_all();
      }
      workers_started.count_down();
      try {
        if (!stopping)
          transform_packets(plan, options.non_finite, read_queue, write_queue, stopping);
      } catch (...) {  // not an item's failure (those travel in packets): out of memory
        failure.record(std::current_exception());
        abort_all();
      }
    });
  for (auto& worker : workers) worker.join();
  write_queue.close();
  reader.join();
  writer.join();
  failure.rethrow_if_failed();
  report.non_finite = non_finite.counts();

  report.shards_written = router.shards_written();
  if (!report.interrupted) {
    if (!job.complete())
      throw Error(ErrorClass::Internal, "executor.incomplete",
                  "the plan ended before every shard was written", directory.string());
    if (claim.part) {
      // This part is done: let go of OUT, then finalize if every other worker is done too.
      claim.part.reset();
      const auto finalized = finalize_if_last(directory);
      report.finalized = finalized.has_value();
      report.finalized_here = finalized && !finalized->already_finalized;
    } else {
      std::vector<std::string> digests;
      for (std::size_t shard = 0; shard < shard_plan.size(); ++shard)
        digests.push_back(job.shard_digest(shard));
      write_completed_output(directory, layout, digests);
      job.mark_finished();
    }
  }
  report.bytes_written = 0;
  for (std::size_t shard = 0; shard < shard_plan.size(); ++shard) {
    const auto file = directory / layout.shard_files[shard];
    if (job.owns(shard) && output_path_exists(file)) report.bytes_written += output_file_size(file);
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

std::string plan_fingerprint(const Plan& plan, std::string_view extra, bool source_times) {
  std::string text;
  for (const auto& item : plan.items) {
    for (const auto& source : item.sources) {
      const auto& path = source.shard->path();
      std::error_code ignored;
      const auto modified =
          source_times ? std::filesystem::last_write_time(path, ignored).time_since_epoch().count()
                       : 0;
      text += fmt::format("S{}|{}|{}|{}|{}|{}|{}|{};", source.input, path.filename().string(),
                          source.shard->file_size(), modified, source.info->name,
                          dtype_name(source.info->dtype), source.info->begin, source.info->end);
    }
    text += fmt::format("T{};", item.transform->describe());
    for (const auto& output : item.outputs)
      text += fmt::format("O{}|{}|{};", output.name, dtype_name(output.dtype),
                          shape_to_string(output.shape));
  }
  text += "X";
  text += extra;
  return xxh3_128_hex(text);
}

}  // namespace qs
