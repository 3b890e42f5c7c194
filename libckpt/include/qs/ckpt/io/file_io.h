#pragma once
// Thin RAII wrappers over POSIX files: full reads/writes that survive short transfers and
// EINTR, and the temp-file + fsync + rename dance that keeps half-written files invisible.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <type_traits>

#include "qs/ckpt/io/bus_error_guard.h"

namespace qs {

// Every input file is opened through this class. Only regular files (and symbolic links to
// them) are accepted; anything else throws BadInput naming the path: "file.not_regular"
// (FIFO, socket, device, directory: refused before opening, so a FIFO never blocks),
// "file.dangling_link", "file.symlink_loop", "file.open" (missing, no permission).
class ReadOnlyFile {
 public:
  explicit ReadOnlyFile(const std::filesystem::path& path);
  ReadOnlyFile(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile& operator=(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
  ~ReadOnlyFile();

  std::uint64_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }
  // Reads exactly out.size() bytes at `offset`; a file that ends early (truncated, or shrunk
  // since it was opened) is an error naming it: BadInput "file.truncated".
  void read_at(std::uint64_t offset, std::span<std::byte> out) const;
  int descriptor() const { return fd_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

// A read-only memory map of a whole file, for passes that look at every byte once: no copy
// into user buffers (pread's copy costs a third of the checksum pass's speed). Pages already
// looked at are handed back with release() so the resident set stays bounded however large
// the file is. Reads go through read_guarded(), so a file that shrinks while it is mapped is
// an error naming it, not a SIGBUS.
class FileMapping {
 public:
  explicit FileMapping(const ReadOnlyFile& file);
  FileMapping(const FileMapping&) = delete;
  FileMapping& operator=(const FileMapping&) = delete;
  ~FileMapping();

  // Runs visit(bytes) over the mapping's bytes [begin, end). When the file has shrunk below a
  // page visit touches, throws BadInput "file.truncated" naming the file. visit must only
  // read memory (it is left by siglongjmp, see bus_error_guard.h).
  template <typename Visit>
  void read_guarded(std::uint64_t begin, std::uint64_t end, Visit&& visit) const {
    struct Call {
      std::remove_reference_t<Visit>* visit;
      std::span<const std::byte> bytes;
    } call{&visit, bytes().subspan(begin, end - begin)};
    const bool completed = call_catching_bus_error(
        [](void* context) {
          auto* call = static_cast<Call*>(context);
          (*call->visit)(call->bytes);
        },
        &call);
    if (!completed) throw_shrunk(begin);
  }
  // Drops the mapping's pages in [begin, end) (rounded inwards to pages); the page cache keeps
  // them, so a later read is still cheap.
  void release(std::uint64_t begin, std::uint64_t end) const;

 private:
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  [[noreturn]] void throw_shrunk(std::uint64_t offset) const;

  const ReadOnlyFile& file_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// A file created under a temporary name beside its destination; it only takes the final
// name in commit(), after its bytes are on disk. Dropped without commit it removes itself.
class AtomicOutputFile {
 public:
  explicit AtomicOutputFile(std::filesystem::path destination);
  AtomicOutputFile(AtomicOutputFile&& other) noexcept;
  AtomicOutputFile& operator=(AtomicOutputFile&& other) = delete;
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;
  ~AtomicOutputFile();

  void write(std::span<const std::byte> bytes);
  void write(std::string_view text);
  std::uint64_t bytes_written() const { return written_; }
  const std::filesystem::path& destination() const { return destination_; }
  // fsync, rename onto the destination, fsync the directory.
  void commit();

 private:
  void discard() noexcept;

  std::filesystem::path destination_;
  std::filesystem::path temporary_;
  int fd_ = -1;
  std::uint64_t written_ = 0;
};

// Whether a directory entry is an AtomicOutputFile's temporary (".NAME.tmp-PID-N"): what a
// killed writer leaves behind.
bool is_temporary_file_name(std::string_view file_name);

// Writes a whole small file atomically (configs, index files, job state).
void write_file_atomically(const std::filesystem::path& destination, std::string_view content);
std::string read_text_file(const std::filesystem::path& path);
// read_text_file, then parse_json_input (core/json_input.h): bad JSON is BadInput `kind`.
nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& kind);

}  // namespace qs
