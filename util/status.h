// Status and Result<T>: how every module boundary in hbiss reports failure.
//
// A Status is either OK or carries a code, a human-readable message and a
// retryable flag. Errors cross module boundaries as values, never as
// exceptions. Both types are cheap to move and safe to copy.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace hbiss {

class [[nodiscard]] Status {
 public:
  enum class Code : unsigned char {
    kOk = 0,
    kNotFound,
    kAlreadyExists,
    kCorruption,
    kIOError,
    kInvalidArgument,
    kNotSupported,
    kNoSpace,
    kBusy,       // held by someone else (a lock, a lease)
    kAborted,    // the operation was cancelled (shutdown)
  };

  Status() = default;

  static Status OK() { return Status(); }
  static Status NotFound(std::string_view msg) { return Status(Code::kNotFound, msg); }
  static Status AlreadyExists(std::string_view msg) { return Status(Code::kAlreadyExists, msg); }
  static Status Corruption(std::string_view msg) { return Status(Code::kCorruption, msg); }
  static Status IOError(std::string_view msg, bool retryable = false) {
    return Status(Code::kIOError, msg, retryable);
  }
  static Status InvalidArgument(std::string_view msg) { return Status(Code::kInvalidArgument, msg); }
  static Status NotSupported(std::string_view msg) { return Status(Code::kNotSupported, msg); }
  static Status NoSpace(std::string_view msg) { return Status(Code::kNoSpace, msg); }
  static Status Busy(std::string_view msg, bool retryable = true) {
    return Status(Code::kBusy, msg, retryable);
  }
  static Status Aborted(std::string_view msg) { return Status(Code::kAborted, msg); }
  // An IOError built from errno, e.g. FromErrno("open /x", ENOENT). ENOENT maps
  // to NotFound, EEXIST to AlreadyExists, ENOSPC/EDQUOT to NoSpace, EINTR and
  // EAGAIN to a retryable IOError.
  static Status FromErrno(std::string_view context, int err);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  bool retryable() const { return retryable_; }
  const std::string& message() const { return msg_; }

  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsAlreadyExists() const { return code_ == Code::kAlreadyExists; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  bool IsIOError() const { return code_ == Code::kIOError; }
  bool IsInvalidArgument() const { return code_ == Code::kInvalidArgument; }
  bool IsNotSupported() const { return code_ == Code::kNotSupported; }
  bool IsNoSpace() const { return code_ == Code::kNoSpace; }
  bool IsBusy() const { return code_ == Code::kBusy; }

  // Returns a copy whose message is "<prefix>: <message>".
  Status WithContext(std::string_view prefix) const;

  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;

  static const char* CodeName(Code c);

 private:
  Status(Code c, std::string_view msg, bool retryable = false)
      : code_(c), retryable_(retryable), msg_(msg) {}

  Code code_ = Code::kOk;
  bool retryable_ = false;
  std::string msg_;
};

// Result<T> holds either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}                  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {            // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok() && "Result built from an OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  // The error; Status::OK() when ok().
  Status status() const { return ok() ? Status::OK() : std::get<Status>(v_); }

  // REQUIRES: ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace hbiss

// Returns the Status of `expr` from the enclosing function when it is not OK.
#define HBISS_RETURN_IF_ERROR(expr)              \
  do {                                           \
    ::hbiss::Status _hbiss_st = (expr);          \
    if (!_hbiss_st.ok()) return _hbiss_st;       \
  } while (0)

#define HBISS_CONCAT_INNER(a, b) a##b
#define HBISS_CONCAT(a, b) HBISS_CONCAT_INNER(a, b)
// HBISS_ASSIGN_OR_RETURN(auto x, SomethingReturningResult());
#define HBISS_ASSIGN_OR_RETURN(lhs, expr) \
  HBISS_ASSIGN_OR_RETURN_IMPL(HBISS_CONCAT(_hbiss_r, __LINE__), lhs, expr)
#define HBISS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
