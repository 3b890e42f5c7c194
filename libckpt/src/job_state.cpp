#include "qs/ckpt/job_state.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "qs/ckpt/checkpoint.h"
#include "qs/ckpt/error.h"
#include "qs/ckpt/executor.h"
#include "qs/ckpt/file_io.h"
#include "qs/ckpt/json_input.h"

namespace qs {
namespace {

constexpr int kJobFileVersion = 1;

std::uint64_t expected_shard_file_size(const std::vector<TensorSpec>& tensors) {
  std::uint64_t size = build_safetensors_header(tensors, {{"format", "pt"}}).size();
  for (const auto& tensor : tensors) size += tensor.byte_size();
  return size;
}

}  // namespace

JobState JobState::open_or_create(const std::filesystem::path& directory,
                                  const std::string& fingerprint,
                                  const std::vector<std::vector<TensorSpec>>& shard_plan) {
  JobState job;
  job.path_ = directory / kJobFileName;
  job.fingerprint_ = fingerprint;
  job.done_.assign(shard_plan.size(), false);
  if (!std::filesystem::exists(job.path_)) {
    job.save();
    return job;
  }
  nlohmann::json state;
  try {
    state = parse_json_input(read_text_file(job.path_), "job.invalid", job.path_.string());
    if (state.at("version").get<int>() != kJobFileVersion)
      throw_bad_input("job.invalid", "job file of an unknown version", job.path_.string());
    if (state.at("fingerprint").get<std::string>() != fingerprint ||
        state.at("shard_count").get<std::size_t>() != shard_plan.size())
      throw_bad_input("job.fingerprint_mismatch",
                      "the job in this directory was started with other inputs, recipe or "
                      "options; use --force to start over",
                      job.path_.string());
    for (const auto& shard : state.at("done_shards")) {
      auto index = shard.get<std::size_t>();
      if (index >= shard_plan.size())
        throw_bad_input("job.invalid", "job file lists a shard out of range", job.path_.string());
      const auto file = directory / shard_file_name(index, shard_plan.size());
      std::error_code error;
      job.done_[index] =
          std::filesystem::file_size(file, error) == expected_shard_file_size(shard_plan[index]) &&
          !error;
    }
    job.finished_ = state.value("finished", false);
  } catch (const nlohmann::json::exception& error) {
    throw_bad_input("job.invalid", fmt::format("unreadable job file: {}", error.what()),
                    job.path_.string());
  }
  return job;
}

std::size_t JobState::done_shard_count() const {
  std::size_t count = 0;
  for (bool done : done_) count += done ? 1 : 0;
  return count;
}

void JobState::mark_shard_done(std::size_t shard) {
  done_[shard] = true;
  save();
}

void JobState::mark_finished() {
  finished_ = true;
  save();
}

void JobState::save() const {
  nlohmann::json state;
  state["version"] = kJobFileVersion;
  state["fingerprint"] = fingerprint_;
  state["shard_count"] = done_.size();
  auto done = nlohmann::json::array();
  for (std::size_t shard = 0; shard < done_.size(); ++shard)
    if (done_[shard]) done.push_back(shard);
  state["done_shards"] = std::move(done);
  state["finished"] = finished_;
  write_file_atomically(path_, state.dump(2) + "\n");
}

}  // namespace qs
