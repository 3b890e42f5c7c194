#include "qs/ckpt/job/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/job/job_state.h"
#include "qs/ckpt/job/output_manifest.h"
#include "qs/ckpt/io/shard_scan.h"

namespace qs {
namespace {

// Copies move through the pipeline in pieces of this size, so a 2 GB embedding does not need
// 2 GB of buffer.
constexpr std::uint64_t kCopyChunkBytes = 64ull << 20;

// Every shard's header metadata (what transformers writes).
const StringMap kShardMetadata = {{"format", "pt"}};

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
  std::size_t item = 0;
  bool chunk = false;  // a piece of a byte copy: `outputs[0]` holds it, no transform runs
  bool last_chunk = true;
  bool skipped = false;  // done by an earlier run: nothing to read or write
  std::uint64_t reserved_bytes = 0;
  std::uint64_t source_bytes = 0;
  std::vector<std::vector<std::byte>> sources;
  std::vector<std::vector<std::byte>> outputs;
  std::vector<TensorQuality> quality;
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
  bool shard_done(std::size_t shard) const { return job_.shard_done(shard); }
  std::size_t shard_count() const { return plan_.size(); }
  const std::vector<std::vector<TensorSpec>>& plan() const { return plan_; }

  // Bytes of output tensor `tensor_index`, possibly in several calls. Returns true when a
  // shard was committed by this call.
  bool write(std::size_t tensor_index, std::span<const std::byte> bytes) {
    const std::size_t shard = shard_of(tensor_index);
    if (shard_done(shard)) return false;
    if (!writer_ || open_shard_ != shard) {
      writer_ = std::make_unique<SafetensorsWriter>(
          directory_ / shard_file_name(shard, plan_.size()), plan_[shard], kShardMetadata);
      open_shard_ = shard;
      // The digest covers the whole file: the header the writer wrote, then every byte.
      digest_ = std::make_unique<Xxh3Digest>();
      const std::string header = build_safetensors_header(plan_[shard], kShardMetadata);
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

// Temporaries a killed writer left of our files (other names are not ours to remove).
void remove_stale_temporaries(const std::filesystem::path& directory,
                              const std::vector<std::string>& files) {
  for (const auto& name : output_entry_names(directory)) {
    if (!is_temporary_file_name(name)) continue;
    const auto target = name.substr(1, name.find(".tmp-") - 1);
    if (std::find(files.begin(), files.end(), target) != files.end() || target == kJobFileName)
      remove_output_entry(directory / name);
  }
}

// Every file the job writes besides its job file: shards, configs, manifest, index.
std::vector<std::string> output_file_names(
    std::size_t shard_count, const std::vector<std::pair<std::string, std::string>>& extra) {
  std::vector<std::string> files;
  for (std::size_t shard = 0; shard < shard_count; ++shard)
    files.push_back(shard_file_name(shard, shard_count));
  for (const auto& [name, content] : extra) files.push_back(name);
  files.emplace_back(kManifestFileName);
  if (shard_count > 1) files.emplace_back(kIndexFileName);
  return files;
}

// The digests of everything the finished job wrote: shards from the job file, small files
// from their content.
Manifest output_manifest(const JobState& job,
                         const std::vector<std::vector<TensorSpec>>& shard_plan,
                         const std::vector<std::pair<std::string, std::string>>& small_files) {
  Manifest manifest;
  for (std::size_t shard = 0; shard < shard_plan.size(); ++shard) {
    std::uint64_t bytes = build_safetensors_header(shard_plan[shard], kShardMetadata).size();
    for (const auto& tensor : shard_plan[shard]) bytes += tensor.byte_size();
    manifest[shard_file_name(shard, shard_plan.size())] = {bytes, job.shard_digest(shard)};
  }
  for (const auto& [name, content] : small_files)
    manifest[name] = {content.size(), xxh3_128_hex(content)};
  return manifest;
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
void tally_sources(const PlanItem& item, const Packet& packet, NonFiniteTally& tally) {
  if (packet.chunk) {
    tally.scan(*item.sources[0].info, item.sources[0].shard->path().string(), packet.outputs[0]);
    return;
  }
  for (std::size_t i = 0; i < item.sources.size(); ++i)
    tally.scan(*item.sources[i].info, item.sources[i].shard->path().string(), packet.sources[i]);
}

}  // namespace

ExecutionReport execute_plan(const Plan& plan, const ExecutionOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const auto& directory = options.output_directory;
  // Checked, locked and (with force) cleared before anything is written; held to the end.
  std::optional<OutputDirectory> claimed;
  if (!options.claimed_output)
    claimed.emplace(
        OutputDirectory::claim(directory, output_mode_from_flags(options.resume, options.force)));

  auto specs = plan.output_specs();
  auto shard_plan = split_into_shards(specs, options.max_shard_bytes);
  if (shard_plan.empty()) shard_plan.emplace_back();
  const std::string fingerprint = plan_fingerprint(
      plan, fmt::format("{}|shard={}", options.fingerprint, options.max_shard_bytes),
      options.fingerprint_source_times);

  const auto files = output_file_names(shard_plan.size(), options.extra_files);
  JobState job = JobState::open_or_create(directory, fingerprint, shard_plan, files);
  remove_stale_temporaries(directory, files);

  ExecutionReport report;
  report.total_shards = shard_plan.size();
  report.shards_resumed = job.done_shard_count();
  report.redone_shards = job.discarded_shards();

  ShardRouter router(directory, shard_plan, job);
  // The first output tensor index of every item, and whether any of its outputs still needs
  // writing.
  std::vector<std::size_t> first_output(plan.items.size());
  std::vector<bool> needed(plan.items.size());
  {
    std::size_t index = 0;
    for (std::size_t i = 0; i < plan.items.size(); ++i) {
      first_output[i] = index;
      bool any = false;
      for (std::size_t k = 0; k < plan.items[i].outputs.size(); ++k)
        any = any || !router.shard_done(router.shard_of(index + k));
      needed[i] = any;
      index += plan.items[i].outputs.size();
    }
  }

  ExecutionProgress progress;
  progress.total_source_bytes = plan.source_bytes();
  progress.total_items = plan.items.size();
  progress.total_shards = shard_plan.size();
  progress.done_shards = job.done_shard_count();

  ByteBudget budget(options.max_buffer_bytes);
  ClosableQueue<Packet> read_queue;
  ClosableQueue<Packet> write_queue;
  FirstFailure failure;
  std::atomic<bool> stopping{false};
  const auto abort_all = [&] {
    stopping = true;
    budget.abort();
    read_queue.close();
    write_queue.close();
  };

  std::thread reader([&] {
    try {
      for (std::size_t i = 0; i < plan.items.size() && !stopping; ++i) {
        const PlanItem& item = plan.items[i];
        if (!needed[i]) {  // all its outputs are in shards an earlier run committed
          if (options.on_item_skipped) options.on_item_skipped(i);
          Packet skipped;
          skipped.skipped = true;
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

  std::thread writer([&] {
    try {
      while (auto packet = write_queue.pop()) {
        if (stopping) break;
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
        progress.done_source_bytes += packet->source_bytes;
        if (!packet->chunk || packet->last_chunk) ++progress.done_items;
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

  // Transforms run here, on the calling thread; they parallelise internally.
  NonFiniteTally non_finite(options.non_finite);
  try {
    while (auto packet = read_queue.pop()) {
      if (stopping) break;
      if (!packet->skipped) tally_sources(plan.items[packet->item], *packet, non_finite);
      if (!packet->chunk && !packet->skipped) run_transform(plan.items[packet->item], *packet);
      write_queue.push(std::move(*packet));
    }
  } catch (...) {
    failure.record(std::current_exception());
    abort_all();
  }
  write_queue.close();
  reader.join();
  writer.join();
  failure.rethrow_if_failed();
  report.non_finite = non_finite.counts();

  report.shards_written = router.shards_written();
  if (!report.interrupted) {
    if (job.done_shard_count() != shard_plan.size())
      throw Error(ErrorClass::Internal, "executor.incomplete",
                  "the plan ended before every shard was written", directory.string());
    auto small_files = options.extra_files;
    const std::string index = shard_plan.size() > 1 ? checkpoint_index_text(shard_plan) : "";
    for (const auto& [name, content] : small_files)
      write_file_atomically(directory / name, content);
    if (!index.empty()) small_files.emplace_back(kIndexFileName, index);
    // The manifest before the index: a directory with an index is a complete checkpoint.
    write_manifest(directory, output_manifest(job, shard_plan, small_files));
    if (!index.empty()) write_file_atomically(directory / kIndexFileName, index);
    job.mark_finished();
  }
  report.bytes_written = 0;
  for (std::size_t shard = 0; shard < shard_plan.size(); ++shard) {
    const auto file = directory / shard_file_name(shard, shard_plan.size());
    if (output_path_exists(file)) report.bytes_written += output_file_size(file);
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
