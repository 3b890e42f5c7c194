#include "qs/ckpt/io/file_io.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/core/json_input.h"

namespace qs {
namespace {

std::string errno_text(int error_number) { return std::strerror(error_number); }

void fsync_directory(const std::filesystem::path& directory) {
  int fd = ::open(directory.empty() ? "." : directory.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // some filesystems do not allow it; the rename itself still happened
  ::fsync(fd);
  ::close(fd);
}

// Unique per process and per call, so concurrent writers of one directory never collide.
std::filesystem::path temporary_name_for(const std::filesystem::path& destination) {
  static std::atomic<unsigned> counter{0};
  auto name = fmt::format(".{}.tmp-{}-{}", destination.filename().string(), ::getpid(), counter++);
  return destination.parent_path() / name;
}

// What a non-regular file is, for the error message.
const char* file_type_name(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

[[noreturn]] void throw_not_regular(mode_t mode, const std::filesystem::path& path) {
  throw_bad_input("file.not_regular",
                  fmt::format("{}, not a regular file: inputs must be regular files (or "
                              "symbolic links to them)",
                              file_type_name(mode)),
                  path.string());
}

[[noreturn]] void throw_cannot_open(int error_number, const std::filesystem::path& path) {
  struct stat link {};
  if (error_number == ELOOP)
    throw_bad_input("file.symlink_loop", "symbolic links loop (or nest too deeply)", path.string());
  if (error_number == ENOENT && ::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode))
    throw_bad_input("file.dangling_link", "symbolic link to a file that does not exist",
                    path.string());
  throw_bad_input("file.open", "cannot open: " + errno_text(error_number), path.string());
}

}  // namespace

// Every input file is opened here. The type is checked before opening, because opening a
// FIFO for reading blocks until a writer appears (and opening a device can have effects of
// its own), and again on the descriptor, because the path may have changed in between;
// O_NONBLOCK makes that second open return at once whatever the path has become.
ReadOnlyFile::ReadOnlyFile(const std::filesystem::path& path) : path_(path) {
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) throw_cannot_open(errno, path);
  if (!S_ISREG(status.st_mode)) throw_not_regular(status.st_mode, path);
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd_ < 0) throw_cannot_open(errno, path);
  if (::fstat(fd_, &status) != 0) {
    int error_number = errno;
    ::close(fd_);
    throw_io_error("file.stat", "cannot stat: " + errno_text(error_number), path.string());
  }
  if (!S_ISREG(status.st_mode)) {
    ::close(fd_);
    throw_not_regular(status.st_mode, path);
  }
  size_ = static_cast<std::uint64_t>(status.st_size);
}

ReadOnlyFile::ReadOnlyFile(ReadOnlyFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}

ReadOnlyFile& ReadOnlyFile::operator=(ReadOnlyFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
  }
  return *this;
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

void ReadOnlyFile::read_at(std::uint64_t offset, std::span<std::byte> out) const {
  std::size_t done = 0;
  while (done < out.size()) {
    ssize_t got =
        ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_io_error(
          "file.read",
          "read failed at offset " + std::to_string(offset + done) + ": " + errno_text(errno),
          path_.string());
    }
    if (got == 0)
      throw_bad_input("file.truncated",
                      "file ends at " + std::to_string(offset + done) + " bytes, expected " +
                          std::to_string(offset + out.size()) +
                          " (truncated, or shrunk while being read)",
                      path_.string());
    done += static_cast<std::size_t>(got);
  }
}

FileMapping::FileMapping(const ReadOnlyFile& file) : file_(file), size_(file.size()) {
  if (size_ == 0) return;
  void* address = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, file.descriptor(), 0);
  if (address == MAP_FAILED)
    throw_io_error("file.mmap", "cannot map: " + errno_text(errno), file.path().string());
  data_ = static_cast<const std::byte*>(address);
  ::madvise(address, size_, MADV_SEQUENTIAL);
}

FileMapping::~FileMapping() {
  if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
}

void FileMapping::release(std::uint64_t begin, std::uint64_t end) const {
  const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  std::uint64_t first = (begin + page - 1) / page * page;
  std::uint64_t last = std::min<std::uint64_t>(end, size_) / page * page;
  if (data_ && last > first)
    ::madvise(const_cast<std::byte*>(data_) + first, last - first, MADV_DONTNEED);
}

void FileMapping::throw_shrunk(std::uint64_t offset) const {
  struct stat status {};
  const std::string now = ::fstat(file_.descriptor(), &status) == 0
                              ? fmt::format("{} bytes", status.st_size)
                              : std::string("an unknown size");
  throw_bad_input("file.truncated",
                  fmt::format("file shrank from {} bytes to {} while being read (at byte {})",
                              size_, now, offset),
                  file_.path().string());
}

AtomicOutputFile::AtomicOutputFile(std::filesystem::path destination)
    : destination_(std::move(destination)), temporary_(temporary_name_for(destination_)) {
  fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw_io_error("file.create",
                   "cannot create " + temporary_.filename().string() + ": " + errno_text(errno),
                   destination_.string());
}

AtomicOutputFile::AtomicOutputFile(AtomicOutputFile&& other) noexcept
    : destination_(std::move(other.destination_)),
      temporary_(std::move(other.temporary_)),
      fd_(std::exchange(other.fd_, -1)),
      written_(other.written_) {}

AtomicOutputFile::~AtomicOutputFile() { discard(); }

void AtomicOutputFile::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(temporary_.c_str());
  }
}

void AtomicOutputFile::write(std::span<const std::byte> bytes) {
  if (fd_ < 0)
    throw Error(ErrorClass::Internal, "file.write_after_commit", "write after commit",
                destination_.string());
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t put = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (put < 0) {
      if (errno == EINTR) continue;
      int error_number = errno;
      discard();
      throw_io_error(error_number == ENOSPC ? "file.disk_full" : "file.write",
                     "write failed: " + errno_text(error_number), destination_.string());
    }
    done += static_cast<std::size_t>(put);
  }
  written_ += bytes.size();
}

void AtomicOutputFile::write(std::string_view text) {
  write(std::as_bytes(std::span(text.data(), text.size())));
}

void AtomicOutputFile::commit() {
  if (fd_ < 0)
    throw Error(ErrorClass::Internal, "file.double_commit", "commit twice", destination_.string());
  if (::fsync(fd_) != 0) {
    int error_number = errno;
    discard();
    throw_io_error("file.fsync", "fsync failed: " + errno_text(error_number),
                   destination_.string());
  }
  ::close(fd_);
  fd_ = -1;
  if (::rename(temporary_.c_str(), destination_.c_str()) != 0) {
    int error_number = errno;
    ::unlink(temporary_.c_str());
    throw_io_error("file.rename", "cannot rename into place: " + errno_text(error_number),
                   destination_.string());
  }
  fsync_directory(destination_.parent_path());
}

bool is_temporary_file_name(std::string_view file_name) {
  return file_name.starts_with(".") && file_name.find(".tmp-") != std::string_view::npos;
}

void write_file_atomically(const std::filesystem::path& destination, std::string_view content) {
  AtomicOutputFile out(destination);
  out.write(content);
  out.commit();
}

std::string read_text_file(const std::filesystem::path& path) {
  ReadOnlyFile file(path);
  std::string text(file.size(), '\0');
  file.read_at(0, std::as_writable_bytes(std::span(text.data(), text.size())));
  return text;
}

nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& kind) {
  return parse_json_input(read_text_file(path), kind, path.string());
}

}  // namespace qs
