#include "qs/ckpt/job/output_directory.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>
#include <set>
#include <utility>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/job/executor.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/job/job_state.h"
#include "qs/ckpt/job/output_layout.h"
#include "qs/ckpt/job/partition.h"

namespace qs {
namespace fs = std::filesystem;
namespace {

// How long a partitioned job's worker waits for an exclusive holder of OUT before refusing.
constexpr auto kSharedLockPatience = std::chrono::seconds(30);

// At most this many foreign names are quoted in a refusal.
constexpr std::size_t kNamesQuoted = 3;

// Which names a temporary file stands for: ".NAME.tmp-PID-N" → "NAME".
std::string temporary_target(const std::string& name) {
  return name.substr(1, name.find(".tmp-") - 1);
}

// The entries of OUT that no job of ours recorded, in name order.
std::vector<std::string> foreign_entries(const std::vector<std::string>& entries,
                                         const std::set<std::string>& ours) {
  std::vector<std::string> foreign;
  for (const auto& name : entries) {
    const bool owned = ours.contains(name) ||
                       (is_temporary_file_name(name) && ours.contains(temporary_target(name)));
    if (!owned) foreign.push_back(name);
  }
  return foreign;
}

std::string quote_names(const std::vector<std::string>& names) {
  std::string text;
  for (std::size_t i = 0; i < names.size() && i < kNamesQuoted; ++i)
    text += fmt::format("{}'{}'", i ? ", " : "", names[i]);
  if (names.size() > kNamesQuoted) text += fmt::format(" and {} more", names.size() - kNamesQuoted);
  return text;
}

// OUT as it stands: absent, a directory (possibly through a link), or something we refuse.
// Returns whether it exists.
bool check_output_path(const fs::path& path) {
  std::error_code error;
  const auto link = fs::symlink_status(path, error);
  if (error && error != std::errc::no_such_file_or_directory)
    throw_output_error(error, "inspect", path);
  if (!fs::exists(link)) return false;
  const auto target = fs::status(path, error);
  if (error == std::errc::too_many_symbolic_link_levels)
    throw_bad_input("output.symlink_loop",
                    "the output path is a loop of symbolic links; give a directory", path.string());
  if (error && error != std::errc::no_such_file_or_directory)
    throw_output_error(error, "inspect", path);
  if (!fs::exists(target)) {
    std::error_code ignored;
    throw_bad_input("output.dangling_link",
                    fmt::format("the output path is a symbolic link to '{}', which does not "
                                "exist; create that directory or give another path",
                                fs::read_symlink(path, ignored).string()),
                    path.string());
  }
  if (!fs::is_directory(target))
    throw_bad_input("output.not_a_directory",
                    fs::is_regular_file(target)
                        ? "the output path is a file, not a directory (--force only replaces "
                          "an earlier job's output directory, never a file)"
                        : "the output path is not a directory (a device, socket or pipe)",
                    path.string());
  return true;
}

// The locked descriptor, or -1 when another process holds a conflicting lock and
// `fail_when_locked` is off. Exclusive for a job that owns OUT alone, shared for the workers
// of a partitioned job.
int lock_directory(const fs::path& path, bool shared = false, bool fail_when_locked = true) {
  const int descriptor = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (descriptor < 0)
    throw_output_error(std::error_code(errno, std::generic_category()), "open", path);
  // A worker may arrive while another holds the lock exclusively for a moment to see whether
  // it is the last one (or to finalize, which writes only small files): it waits that long.
  const auto patience = std::chrono::steady_clock::now() + kSharedLockPatience;
  int result = ::flock(descriptor, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB);
  while (result != 0 && errno == EWOULDBLOCK && shared &&
         std::chrono::steady_clock::now() < patience) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    result = ::flock(descriptor, LOCK_SH | LOCK_NB);
  }
  if (result != 0) {
    const int error_number = errno;
    ::close(descriptor);
    if (error_number == EWOULDBLOCK && !fail_when_locked) return -1;
    if (error_number == EWOULDBLOCK)
      throw_bad_input("output.locked",
                      shared ? "another quantsmith job (not a part of a partitioned one) or a "
                               "finalize is writing this output directory; wait for it to "
                               "finish or choose another directory"
                             : "another quantsmith job is writing this output directory; wait "
                               "for it (or, for a partitioned job, its running workers) to "
                               "finish or choose another directory",
                      path.string());
    throw_output_error(std::error_code(error_number, std::generic_category()), "lock", path);
  }
  return descriptor;
}

// Every name in OUT a partitioned job's parts may have written (files, part job and lock
// files, the record), or nullopt when OUT holds no partition record.
std::optional<std::vector<std::string>> partitioned_job_files(const fs::path& path) {
  const auto record = path / kPartitionRecordFileName;
  if (!output_path_exists(record)) return std::nullopt;
  auto names = output_layout_from_json(read_json_file(record, "job.invalid"), "job.invalid",
                                       record.string())
                   .files;
  names.emplace_back(kPartitionRecordFileName);
  for (const auto& name : output_entry_names(path))
    if (partition_of_job_file(name).count || partition_of_lock_file(name).count)
      names.push_back(name);
  return names;
}

// What --force may remove: the job file's records and the caller's own entries. Refuses,
// before anything is deleted, when OUT holds anything else.
void clear_for_force(const fs::path& path, const std::vector<std::string>& entries,
                     const std::vector<std::string>& owned_entries) {
  auto recorded = JobState::recorded_files(path);
  std::set<std::string> ours(owned_entries.begin(), owned_entries.end());
  if (recorded) ours.insert(recorded->begin(), recorded->end());
  // The parts of a partitioned job: its record names the job's files.
  if (const auto names = partitioned_job_files(path)) {
    ours.insert(names->begin(), names->end());
    if (!recorded) recorded.emplace();
  }
  const auto foreign = foreign_entries(entries, ours);
  if (!foreign.empty())
    throw_bad_input(
        "output.not_empty",
        recorded ? fmt::format("output directory holds {} that no quantsmith job recorded; "
                               "--force removes only an earlier job's files, so nothing was "
                               "removed: move them away or choose another directory",
                               quote_names(foreign))
                 : fmt::format("output directory is not empty ({}) and holds no quantsmith job "
                               "file; --force removes only an earlier job's files, so nothing "
                               "was removed: choose another directory",
                               quote_names(foreign)),
        path.string());
  for (const auto& name : entries) {
    std::error_code error;
    fs::remove_all(path / name, error);
    if (error) throw_output_error(error, "remove", path / name);
  }
}

}  // namespace

OutputMode output_mode_from_flags(bool resume, bool force) {
  if (resume && force)
    throw_bad_input("cli.resume_and_force",
                    "give at most one of --resume (continue the job) and --force (start over)");
  return resume ? OutputMode::Resume : force ? OutputMode::Force : OutputMode::Fresh;
}

OutputDirectory OutputDirectory::claim(const fs::path& path, OutputMode mode,
                                       const std::vector<std::string>& owned_entries) {
  if (!check_output_path(path)) {
    std::error_code error;
    fs::create_directories(path, error);
    if (error) throw_output_error(error, "create", path);
  }
  OutputDirectory claimed(path, lock_directory(path));
  const auto entries = output_entry_names(path);
  if (entries.empty()) return claimed;
  const bool has_job = std::find(entries.begin(), entries.end(), kJobFileName) != entries.end();
  switch (mode) {
    case OutputMode::Fresh:
      throw_bad_input("output.not_empty",
                      has_job ? "output directory holds an unfinished or finished job; use "
                                "--resume to continue it or --force to start over"
                              : "output directory is not empty; choose another (--force "
                                "replaces only an earlier quantsmith job's output)",
                      path.string());
    case OutputMode::Resume: {
      std::set<std::string> owned(owned_entries.begin(), owned_entries.end());
      if (!has_job && !foreign_entries(entries, owned).empty())
        throw_bad_input("output.not_empty",
                        "output directory is not empty and holds no quantsmith job to resume; "
                        "choose another",
                        path.string());
      return claimed;
    }
    case OutputMode::Force:
      clear_for_force(path, entries, owned_entries);
      return claimed;
  }
  return claimed;
}

OutputDirectory OutputDirectory::claim_shared(const fs::path& path) {
  if (!check_output_path(path)) {
    std::error_code error;
    fs::create_directories(path, error);
    if (error) throw_output_error(error, "create", path);
  }
  return OutputDirectory(path, lock_directory(path, true));
}

void refuse_foreign_entries(const fs::path& directory,
                            const std::function<bool(const std::string&)>& ours,
                            const std::string& whose) {
  std::vector<std::string> foreign;
  for (const auto& name : output_entry_names(directory))
    if (!ours(name) && !(is_temporary_file_name(name) && ours(temporary_target(name))))
      foreign.push_back(name);
  if (!foreign.empty())
    throw_bad_input("output.not_empty",
                    fmt::format("output directory holds {}, which {} does not write; choose "
                                "another directory",
                                quote_names(foreign), whose),
                    directory.string());
}

std::optional<OutputDirectory> OutputDirectory::lock_existing(const fs::path& path,
                                                              bool fail_when_locked) {
  if (!check_output_path(path))
    throw_bad_input("output.missing", "no such output directory", path.string());
  const int descriptor = lock_directory(path, false, fail_when_locked);
  if (descriptor < 0) return std::nullopt;
  return OutputDirectory(path, descriptor);
}

OutputDirectory::OutputDirectory(OutputDirectory&& other) noexcept
    : path_(std::move(other.path_)), lock_descriptor_(std::exchange(other.lock_descriptor_, -1)) {}

OutputDirectory::~OutputDirectory() {
  if (lock_descriptor_ >= 0) ::close(lock_descriptor_);  // closing releases the flock
}

void throw_output_error(const std::error_code& error, const std::string& action,
                        const fs::path& path) {
  const std::string message = fmt::format("cannot {}: {}", action, error.message());
  if (error == std::errc::not_a_directory || error == std::errc::file_exists)
    throw_bad_input("output.not_a_directory",
                    message + " (the path or one of its parents is not a directory)",
                    path.string());
  if (error == std::errc::too_many_symbolic_link_levels)
    throw_bad_input("output.symlink_loop", message, path.string());
  if (error == std::errc::permission_denied || error == std::errc::operation_not_permitted)
    throw_io_error("output.permission_denied", message, path.string());
  if (error == std::errc::read_only_file_system)
    throw_io_error("output.read_only", message, path.string());
  if (error == std::errc::no_space_on_device)
    throw_io_error("output.disk_full", message, path.string());
  throw_io_error("output.filesystem", message, path.string());
}

bool output_path_exists(const fs::path& path) {
  std::error_code error;
  const bool exists = fs::exists(path, error);
  if (error) throw_output_error(error, "inspect", path);
  return exists;
}

std::uint64_t output_file_size(const fs::path& path) {
  std::error_code error;
  const auto size = fs::file_size(path, error);
  if (error) throw_output_error(error, "inspect", path);
  return size;
}

void remove_output_entry(const fs::path& path) {
  std::error_code error;
  fs::remove_all(path, error);
  if (error) throw_output_error(error, "remove", path);
}

std::vector<std::string> output_entry_names(const fs::path& directory) {
  std::vector<std::string> names;
  std::error_code error;
  fs::directory_iterator it(directory, error);
  for (; !error && it != fs::directory_iterator(); it.increment(error))
    names.push_back(it->path().filename().string());
  if (error) throw_output_error(error, "list", directory);
  std::sort(names.begin(), names.end());
  return names;
}

void check_output_directory(const fs::path& output, const std::vector<fs::path>& inputs) {
  // A loop of links or an unreadable parent is reported as the output's error, naming it.
  std::error_code error;
  fs::path out = fs::weakly_canonical(fs::absolute(output), error);
  if (error) throw_output_error(error, "resolve", output);
  for (const auto& input : inputs) {
    fs::path in = fs::weakly_canonical(fs::absolute(input), error);
    if (error) throw_output_error(error, "resolve", input);
    if (fs::is_regular_file(in)) in = in.parent_path();
    auto [in_end, out_it] = std::mismatch(in.begin(), in.end(), out.begin(), out.end());
    if (in_end == in.end())
      throw_bad_input("output.inside_input",
                      out == in ? "output directory is the input directory"
                                : "output directory lies inside the input " + in.string(),
                      output.string());
  }
}

}  // namespace qs
