#pragma once
// The one output policy of every job that writes a checkpoint (quantize, splice, mtp extract,
// mtp inject): what may be in OUT before a run, what --resume and --force mean, and the lock
// that keeps a second writer out.
//
// claim() decides everything before it deletes anything:
//   * OUT must be a directory or absent (then it is created). A regular file, a device, a
//     dangling symbolic link or a loop of links is refused as bad input, whatever the flags.
//   * The directory is locked (flock, exclusive, on the directory itself, so nothing is
//     written into a directory that turns out not to be ours); a second writer is refused at
//     once.
//   * Fresh: OUT must be empty. Resume: OUT must be empty or hold our job file. Force: every
//     entry of OUT must be ours (named by our job file, a temporary of such a file, or an
//     entry the caller owns); only then are they removed. An entry that is not ours refuses
//     the run with nothing deleted.
// Every filesystem failure on OUT becomes a qs::Error naming the path.

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

namespace qs {

enum class OutputMode {
  Fresh,   // OUT new or empty
  Resume,  // continue the job whose job file is in OUT (or start one in an empty OUT)
  Force,   // remove what an earlier job of ours left in OUT, then start afresh
};

// The flags a writing subcommand was given; --resume and --force together are refused.
OutputMode output_mode_from_flags(bool resume, bool force);

class OutputDirectory {
 public:
  // `owned_entries`: names in OUT the calling job owns besides those its job file records
  // (mtp extract's staging directory and finished record).
  static OutputDirectory claim(const std::filesystem::path& path, OutputMode mode,
                               const std::vector<std::string>& owned_entries = {});

  // For a worker of a partitioned job (partition.h), which shares OUT with the other parts'
  // workers: OUT is created when absent and locked shared (so a single-process job or
  // finalize, which lock exclusively, and the workers keep each other out); nothing is
  // removed. The caller checks what OUT holds (refuse_foreign_entries).
  static OutputDirectory claim_shared(const std::filesystem::path& path);

  // An existing output directory, locked exclusively (finalize). With `fail_when_locked` off,
  // returns nullopt when another process holds the lock; with it on, "output.locked".
  static std::optional<OutputDirectory> lock_existing(const std::filesystem::path& path,
                                                      bool fail_when_locked);

  OutputDirectory(OutputDirectory&& other) noexcept;
  OutputDirectory& operator=(OutputDirectory&&) = delete;
  OutputDirectory(const OutputDirectory&) = delete;
  OutputDirectory& operator=(const OutputDirectory&) = delete;
  ~OutputDirectory();  // releases the lock

  const std::filesystem::path& path() const { return path_; }

 private:
  OutputDirectory(std::filesystem::path path, int lock_descriptor)
      : path_(std::move(path)), lock_descriptor_(lock_descriptor) {}

  std::filesystem::path path_;
  int lock_descriptor_ = -1;
};

// A std::filesystem failure on `path` while doing `action` ("create", "list", "remove", ...)
// as a qs::Error: bad input (exit 2) when the path itself is wrong (not a directory, a loop
// of links, a dangling link), an I/O error (exit 1) when the system refused (permission,
// read-only filesystem, disk full).
[[noreturn]] void throw_output_error(const std::error_code& error, const std::string& action,
                                     const std::filesystem::path& path);

// Refuses ("output.not_empty", quoting a few) the entries of `directory` that `ours` does not
// accept, nor is a temporary of a name it accepts; `whose` says whose they are not.
void refuse_foreign_entries(const std::filesystem::path& directory,
                            const std::function<bool(const std::string&)>& ours,
                            const std::string& whose);

// Refuses an output that is an input or lies inside one (either would let the job overwrite
// what it is reading): "output.inside_input". Call it before claim().
void check_output_directory(const std::filesystem::path& output,
                            const std::vector<std::filesystem::path>& inputs);

// Checked forms of the filesystem calls the writers make on OUT.
bool output_path_exists(const std::filesystem::path& path);
std::uint64_t output_file_size(const std::filesystem::path& path);
void remove_output_entry(const std::filesystem::path& path);
std::vector<std::string> output_entry_names(const std::filesystem::path& directory);

}  // namespace qs
