#include "qs/ckpt/job/partitioned_job.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>
#include <utility>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"

namespace qs {
namespace fs = std::filesystem;
namespace {

// The single-process job file's fingerprint and whether it is finished, when there is one.
struct RecordedJob {
  std::string fingerprint;
  bool finished = false;
};

std::optional<RecordedJob> recorded_job(const fs::path& directory) {
  const auto path = directory / kJobFileName;
  if (!output_path_exists(path)) return std::nullopt;
  const auto state = read_json_file(path, "job.invalid");
  try {
    return RecordedJob{state.at("fingerprint").get<std::string>(), state.value("finished", false)};
  } catch (const nlohmann::json::exception& error) {
    throw_bad_input("job.invalid", fmt::format("unreadable job file: {}", error.what()),
                    path.string());
  }
}

[[noreturn]] void throw_other_job(const fs::path& file) {
  throw_bad_input("job.fingerprint_mismatch",
                  "written by another job (other inputs, recipe or options) than this one; "
                  "every part of one job needs the same inputs and flags besides --partition: "
                  "use another output directory or remove this one",
                  file.string());
}

OutputLayout read_layout_record(const fs::path& directory) {
  const auto path = directory / kPartitionRecordFileName;
  return output_layout_from_json(read_json_file(path, "job.invalid"), "job.invalid", path.string());
}

// Exclusive lock on part I's lock file: one worker per part.
int lock_part(const fs::path& file, const Partition& partition) {
  const int descriptor = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (descriptor < 0)
    throw_output_error(std::error_code(errno, std::generic_category()), "create", file);
  if (::flock(descriptor, LOCK_EX | LOCK_NB) != 0) {
    const int error_number = errno;
    ::close(descriptor);
    if (error_number == EWOULDBLOCK)
      throw_bad_input("output.part_locked",
                      fmt::format("another worker is running part {} in this output directory",
                                  partition_label(partition)),
                      file.string());
    throw_output_error(std::error_code(error_number, std::generic_category()), "lock", file);
  }
  return descriptor;
}

// Every part job file in OUT, read; refuses one of another job or split into another count.
std::vector<PartRecord> read_parts(const fs::path& directory, const std::string& fingerprint,
                                   std::size_t count_expected) {
  std::vector<PartRecord> parts;
  for (const auto& name : output_entry_names(directory)) {
    if (partition_of_job_file(name).count == 0) continue;
    auto part = JobState::read_part(directory, name);
    if (part.fingerprint != fingerprint) throw_other_job(directory / name);
    if (count_expected == 0) count_expected = part.partition.count;
    if (part.partition.count != count_expected)
      throw_bad_input("job.partition_mismatch",
                      fmt::format("part of a split into {} parts, where this job is split into "
                                  "{}; every worker of one job needs the same N",
                                  part.partition.count, count_expected),
                      (directory / name).string());
    parts.push_back(std::move(part));
  }
  return parts;
}

bool is_bookkeeping(const std::string& name) {
  return name == kPartitionRecordFileName || partition_of_job_file(name).count != 0 ||
         partition_of_lock_file(name).count != 0;
}

// After the finished job file is written: the parts' records, and temporaries a killed writer
// left of any of the job's files.
void remove_part_bookkeeping(const fs::path& directory, const std::vector<std::string>& files) {
  const std::set<std::string> ours(files.begin(), files.end());
  for (const auto& name : output_entry_names(directory)) {
    const bool temporary = is_temporary_file_name(name);
    const auto target = temporary ? name.substr(1, name.find(".tmp-") - 1) : name;
    if (is_bookkeeping(target) || (temporary && (ours.contains(target) || target == kJobFileName)))
      remove_output_entry(directory / name);
  }
}

// Finalize under the exclusive lock. With `strict` off (a worker), a part missing or not
// complete means "not the last worker": nullopt instead of an error.
std::optional<FinalizeReport> finalize_locked(const fs::path& directory, bool strict) {
  const auto job = recorded_job(directory);
  if (!output_path_exists(directory / kPartitionRecordFileName)) {
    if (job && job->finished) {
      remove_part_bookkeeping(directory, {});
      return FinalizeReport{true, 0, 0};
    }
    if (!strict) return std::nullopt;
    throw_bad_input("finalize.no_job",
                    "the output directory holds no partitioned job (no quantsmith-partition.json): "
                    "run the workers with --partition I/N first",
                    directory.string());
  }
  const auto layout = read_layout_record(directory);
  if (job) {
    // A finalize killed after writing the job file: only the cleanup is left.
    if (job->fingerprint != layout.fingerprint) throw_other_job(directory / kJobFileName);
    if (job->finished) {
      remove_part_bookkeeping(directory, layout.files);
      return FinalizeReport{true, 0, 0};
    }
    throw_bad_input("output.not_empty",
                    "a single-process run of this job is in the output directory too; remove "
                    "the directory and run the job again",
                    (directory / kJobFileName).string());
  }
  const auto parts = read_parts(directory, layout.fingerprint, 0);
  if (parts.empty()) {
    if (!strict) return std::nullopt;
    throw_bad_input("finalize.part_missing",
                    "no part has committed anything yet (no quantsmith-job.part-I-of-N.json); "
                    "run every worker first",
                    directory.string());
  }
  const std::size_t count = parts.front().partition.count;
  const std::size_t shard_count = layout.shard_files.size();
  std::vector<std::string> digests(shard_count);
  std::vector<std::size_t> part_of(shard_count, count);
  for (std::size_t index = 0; index < count; ++index) {
    const Partition partition{index, count};
    const auto part = std::find_if(parts.begin(), parts.end(),
                                   [&](const auto& p) { return p.partition == partition; });
    const auto file = directory / part_job_file_name(partition);
    if (part == parts.end()) {
      if (!strict) return std::nullopt;
      throw_bad_input("finalize.part_missing",
                      fmt::format("part {} has not run here; run its worker (quantsmith ... "
                                  "--partition {} --resume), then finalize",
                                  partition_label(partition), partition_label(partition)),
                      file.string());
    }
    if (part->shard_count != shard_count)
      throw_bad_input("job.invalid", "part job file counts another number of shards",
                      file.string());
    for (const auto shard : part->assigned) {
      if (part_of[shard] != count)
        throw_bad_input("job.invalid", "two parts claim one shard", file.string());
      part_of[shard] = index;
    }
    for (const auto& [shard, digest] : part->committed) {
      if (shard >= shard_count || part_of[shard] != index)
        throw_bad_input("job.invalid", "part job file commits a shard it was not assigned",
                        file.string());
      digests[shard] = digest;
    }
    if (part->committed.size() < part->assigned.size()) {
      if (!strict) return std::nullopt;
      throw_bad_input("finalize.part_incomplete",
                      fmt::format("part {} committed {} of its {} shards (its worker is still "
                                  "running, was stopped or failed); run it again with "
                                  "--partition {} --resume, then finalize",
                                  partition_label(partition), part->committed.size(),
                                  part->assigned.size(), partition_label(partition)),
                      file.string());
    }
  }
  for (std::size_t shard = 0; shard < shard_count; ++shard) {
    const auto file = directory / layout.shard_files[shard];
    if (part_of[shard] == count)
      throw_bad_input("job.invalid",
                      fmt::format("no part was assigned {}", layout.shard_files[shard]),
                      (directory / kPartitionRecordFileName).string());
    std::error_code error;
    const auto size = fs::file_size(file, error);
    if (error || size != layout.shard_bytes[shard])
      throw_bad_input("finalize.shard_damaged",
                      fmt::format("{}; run part {} again with --resume (it rewrites the shard), "
                                  "then finalize",
                                  error ? "missing"
                                        : fmt::format("{} bytes where the plan gives {}", size,
                                                      layout.shard_bytes[shard]),
                                  partition_label({part_of[shard], count})),
                      file.string());
  }
  write_completed_output(directory, layout, digests);
  JobState::write_finished(directory, layout.fingerprint, layout.files, layout.shard_files,
                           layout.shard_bytes, digests);
  remove_part_bookkeeping(directory, layout.files);
  return FinalizeReport{false, count, shard_count};
}

}  // namespace

PartClaim PartClaim::claim(const fs::path& directory, OutputMode mode, const OutputLayout& layout,
                           const Partition& partition) {
  if (mode == OutputMode::Force)
    throw_bad_input("cli.partition_force",
                    "--force cannot start one part over (the other parts share the output "
                    "directory): use --resume, or remove the directory to start the whole job "
                    "over");
  auto claimed = OutputDirectory::claim_shared(directory);
  if (const auto job = recorded_job(directory)) {
    if (job->fingerprint != layout.fingerprint) throw_other_job(directory / kJobFileName);
    if (!job->finished)
      throw_bad_input("output.not_empty",
                      "the output directory holds an unfinished single-process run of this "
                      "job; resume it without --partition, or remove the directory to split it",
                      (directory / kJobFileName).string());
    if (mode == OutputMode::Fresh)
      throw_bad_input("output.not_empty",
                      "the output directory holds this job, finished (with --resume a worker "
                      "has nothing to do)",
                      (directory / kJobFileName).string());
    return PartClaim(std::move(claimed), -1, true);
  }
  // Another job's parts are named as such before anything else is said about OUT.
  read_parts(directory, layout.fingerprint, partition.count);
  const auto record = directory / kPartitionRecordFileName;
  const bool recorded = output_path_exists(record);
  if (recorded) {
    const auto existing = read_layout_record(directory);
    if (existing.fingerprint != layout.fingerprint) throw_other_job(record);
    if (existing != layout)
      throw_bad_input("job.invalid", "the partition record differs from this job's plan",
                      record.string());
  }
  std::set<std::string> names(layout.files.begin(), layout.files.end());
  refuse_foreign_entries(
      directory,
      [&](const std::string& name) { return names.contains(name) || is_bookkeeping(name); },
      "no part of this partitioned job");

  PartClaim claim(std::move(claimed),
                  lock_part(directory / part_lock_file_name(partition), partition), false);
  const auto own_file = directory / part_job_file_name(partition);
  if (mode == OutputMode::Fresh && output_path_exists(own_file))
    throw_bad_input("output.not_empty",
                    fmt::format("part {} already ran in this output directory; use --resume to "
                                "continue it",
                                partition_label(partition)),
                    own_file.string());
  // Every worker writes the same bytes: whichever rename lands last, the record is right.
  if (!recorded) write_file_atomically(record, output_layout_json(layout).dump(2) + "\n");
  return claim;
}

PartClaim::PartClaim(PartClaim&& other) noexcept
    : directory_(std::move(other.directory_)),
      part_lock_(std::exchange(other.part_lock_, -1)),
      already_finalized_(other.already_finalized_) {}

PartClaim::~PartClaim() {
  if (part_lock_ >= 0) ::close(part_lock_);
}

FinalizeReport finalize_partitioned_job(const fs::path& directory) {
  const auto locked = OutputDirectory::lock_existing(directory, true);
  return *finalize_locked(directory, true);
}

std::optional<FinalizeReport> finalize_if_last(const fs::path& directory) {
  const auto locked = OutputDirectory::lock_existing(directory, false);
  if (!locked) return std::nullopt;
  return finalize_locked(directory, false);
}

}  // namespace qs
