#include "qs/ckpt/job/job_state.h"

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/job/executor.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/core/json_input.h"
#include "qs/ckpt/job/output_directory.h"
#include "qs/ckpt/io/shard_scan.h"

namespace qs {
namespace {

// 2: the files the job writes, and a digest per committed shard.
constexpr int kJobFileVersion = 2;

std::uint64_t expected_shard_file_size(const std::vector<TensorSpec>& tensors) {
  std::uint64_t size = build_safetensors_header(tensors, {{"format", "pt"}}).size();
  for (const auto& tensor : tensors) size += tensor.byte_size();
  return size;
}

nlohmann::json parse_job_file(const std::filesystem::path& path) {
  return parse_json_input(read_text_file(path), "job.invalid", path.string());
}

// Why a shard the job file lists as committed cannot be kept, or "" when it can.
std::string shard_problem(const std::filesystem::path& file, std::uint64_t expected_bytes,
                          const std::string& recorded_digest) {
  std::error_code error;
  const auto size = std::filesystem::file_size(file, error);
  if (error) return "missing";
  if (size != expected_bytes)
    return fmt::format("{} bytes where the plan gives {}", size, expected_bytes);
  if (hash_file_xxh3_128(file) != recorded_digest)
    return "its xxh3-128 digest differs from the one recorded when it was committed";
  return {};
}

}  // namespace

JobState JobState::open_or_create(const std::filesystem::path& directory,
                                  const std::string& fingerprint,
                                  const std::vector<std::vector<TensorSpec>>& shard_plan,
                                  const std::vector<std::string>& files,
                                  const PartAssignment* part) {
  JobState job;
  job.path_ = directory / (part ? part_job_file_name(part->partition) : std::string(kJobFileName));
  job.fingerprint_ = fingerprint;
  job.files_ = files;
  job.digests_.assign(shard_plan.size(), {});
  job.owned_.assign(shard_plan.size(), part == nullptr);
  if (part) {
    job.part_ = *part;
    for (const auto shard : part->shards) job.owned_.at(shard) = true;
  }
  for (std::size_t shard = 0; shard < shard_plan.size(); ++shard) {
    job.shard_files_.push_back(shard_file_name(shard, shard_plan.size()));
    job.shard_bytes_.push_back(expected_shard_file_size(shard_plan[shard]));
  }
  if (!output_path_exists(job.path_)) {
    job.save();
    return job;
  }
  const nlohmann::json state = parse_job_file(job.path_);
  try {
    if (state.at("version").get<int>() != kJobFileVersion)
      throw_bad_input("job.invalid",
                      "job file of another quantsmith version; use --force to start over",
                      job.path_.string());
    if (state.at("fingerprint").get<std::string>() != fingerprint ||
        state.at("shard_count").get<std::size_t>() != shard_plan.size())
      throw_bad_input("job.fingerprint_mismatch",
                      part ? "this part was started with other inputs, recipe or options; "
                             "remove the output directory to start the whole job over"
                           : "the job in this directory was started with other inputs, "
                             "recipe or options; use --force to start over",
                      job.path_.string());
    if (part && state.at("assigned_shards").get<std::vector<std::size_t>>() != part->shards)
      throw_bad_input("job.invalid", "part job file assigns other shards to this part",
                      job.path_.string());
    std::vector<std::pair<std::size_t, std::string>> recorded;  // shard, digest
    for (const auto& shard : state.at("committed_shards")) {
      const auto index = shard.at("index").get<std::size_t>();
      if (index >= shard_plan.size() || !job.owned_[index])
        throw_bad_input("job.invalid", "job file lists a shard out of range", job.path_.string());
      recorded.emplace_back(index, shard.at("xxh3_128").get<std::string>());
    }
    // Every committed shard is read whole once: in parallel, as they are independent files.
    std::vector<std::string> problems(recorded.size());
    tbb::parallel_for(std::size_t{0}, recorded.size(), [&](std::size_t i) {
      const auto [index, digest] = recorded[i];
      problems[i] =
          shard_problem(directory / job.shard_files_[index], job.shard_bytes_[index], digest);
    });
    for (std::size_t i = 0; i < recorded.size(); ++i) {
      const auto& [index, digest] = recorded[i];
      if (problems[i].empty())
        job.digests_[index] = digest;
      else
        job.discarded_.push_back(fmt::format("{}: {}", job.shard_files_[index], problems[i]));
    }
    job.finished_ = state.value("finished", false) && job.discarded_.empty();
  } catch (const nlohmann::json::exception& error) {
    throw_bad_input("job.invalid", fmt::format("unreadable job file: {}", error.what()),
                    job.path_.string());
  }
  if (!job.discarded_.empty()) job.save();  // the job file no longer claims them
  return job;
}

std::optional<std::vector<std::string>> JobState::recorded_files(
    const std::filesystem::path& directory) {
  const auto path = directory / kJobFileName;
  if (!output_path_exists(path)) return std::nullopt;
  const nlohmann::json state = parse_job_file(path);
  std::vector<std::string> files = {std::string(kJobFileName)};
  try {
    if (state.at("version").get<int>() == kJobFileVersion) {
      for (const auto& name : state.at("files")) files.push_back(name.get<std::string>());
    } else {  // version 1 listed no files: its shards and index are all we know to be ours
      const auto count = state.at("shard_count").get<std::size_t>();
      for (std::size_t shard = 0; shard < count; ++shard)
        files.push_back(shard_file_name(shard, count));
      files.emplace_back(kIndexFileName);
    }
  } catch (const nlohmann::json::exception& error) {
    throw_bad_input("job.invalid", fmt::format("unreadable job file: {}", error.what()),
                    path.string());
  }
  for (const auto& name : files)
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      throw_bad_input("job.invalid", fmt::format("job file lists '{}' as a file", name),
                      path.string());
  return files;
}

PartRecord JobState::read_part(const std::filesystem::path& directory, const std::string& name) {
  const auto path = directory / name;
  const nlohmann::json state = parse_job_file(path);
  PartRecord record;
  record.file = name;
  std::string partition;
  try {
    if (state.at("version").get<int>() != kJobFileVersion)
      throw_bad_input("job.invalid", "part job file of another quantsmith version",
                      path.string());
    record.fingerprint = state.at("fingerprint").get<std::string>();
    partition = state.at("partition").get<std::string>();
    record.shard_count = state.at("shard_count").get<std::size_t>();
    record.assigned = state.at("assigned_shards").get<std::vector<std::size_t>>();
    for (const auto& shard : state.at("committed_shards"))
      record.committed.emplace_back(shard.at("index").get<std::size_t>(),
                                    shard.at("xxh3_128").get<std::string>());
  } catch (const nlohmann::json::exception& error) {
    throw_bad_input("job.invalid", fmt::format("unreadable part job file: {}", error.what()),
                    path.string());
  }
  try {
    record.partition = parse_partition(partition);
  } catch (const Error& error) {
    throw_bad_input("job.invalid", fmt::format("part job file: {}", error.detail()),
                    path.string());
  }
  if (record.partition != partition_of_job_file(name))
    throw_bad_input("job.invalid",
                    fmt::format("part job file records part {}, its name another",
                                partition_label(record.partition)),
                    path.string());
  for (const auto shard : record.assigned)
    if (shard >= record.shard_count)
      throw_bad_input("job.invalid", "part job file assigns a shard out of range", path.string());
  return record;
}

void JobState::write_finished(const std::filesystem::path& directory,
                              const std::string& fingerprint,
                              const std::vector<std::string>& files,
                              const std::vector<std::string>& shard_files,
                              const std::vector<std::uint64_t>& shard_bytes,
                              const std::vector<std::string>& digests) {
  JobState job;
  job.path_ = directory / kJobFileName;
  job.fingerprint_ = fingerprint;
  job.files_ = files;
  job.shard_files_ = shard_files;
  job.shard_bytes_ = shard_bytes;
  job.digests_ = digests;
  job.owned_.assign(digests.size(), true);
  job.finished_ = true;
  job.save();
}

std::size_t JobState::owned_shard_count() const {
  return static_cast<std::size_t>(std::count(owned_.begin(), owned_.end(), true));
}

std::size_t JobState::done_shard_count() const {
  std::size_t count = 0;
  for (const auto& digest : digests_) count += digest.empty() ? 0 : 1;
  return count;
}

void JobState::mark_shard_done(std::size_t shard, std::string xxh3_128) {
  digests_[shard] = std::move(xxh3_128);
  save();
}

void JobState::mark_finished() {
  finished_ = true;
  save();
}

void JobState::save() const {
  nlohmann::ordered_json state;
  state["version"] = kJobFileVersion;
  state["fingerprint"] = fingerprint_;
  state["files"] = files_;
  state["shard_count"] = digests_.size();
  if (part_) {
    state["partition"] = partition_label(part_->partition);
    state["assigned_shards"] = part_->shards;
  }
  auto committed = nlohmann::ordered_json::array();
  for (std::size_t shard = 0; shard < digests_.size(); ++shard)
    if (!digests_[shard].empty())
      committed.push_back({{"index", shard},
                           {"file", shard_files_[shard]},
                           {"bytes", shard_bytes_[shard]},
                           {"xxh3_128", digests_[shard]}});
  state["committed_shards"] = std::move(committed);
  state["finished"] = finished_;
  write_file_atomically(path_, state.dump(2) + "\n");
}

}  // namespace qs
