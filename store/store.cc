#include "store/store.h"

#include <cctype>
#include <map>

#include "store/local_store.h"
#include "store/memory_store.h"
#include "util/mutex.h"
#include "util/thread_annotations.h"

namespace hbiss::store {

namespace {

constexpr size_t kMaxNameLength = 4096;
constexpr size_t kMaxComponentLength = 255;

Mutex g_schemes_mu;
std::map<std::string, StoreFactory>& Schemes() REQUIRES(g_schemes_mu) {
  static auto* schemes = new std::map<std::string, StoreFactory>();
  return *schemes;
}

std::string Quote(std::string_view s) {
  std::string out = "'";
  out.append(s);
  out += "'";
  return out;
}

// Decodes %XX escapes. InvalidArgument for a malformed escape or a NUL.
Result<std::string> PercentDecode(std::string_view s, const std::string& uri) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    int hi = i + 2 < s.size() ? hex(s[i + 1]) : -1;
    int lo = i + 2 < s.size() ? hex(s[i + 2]) : -1;
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
      return Status::InvalidArgument("bad percent escape in store URI " + Quote(uri));
    }
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

bool IsSchemeChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
}

}  // namespace

Status ValidateName(std::string_view name) {
  auto bad = [&](std::string_view why) {
    std::string msg = "invalid store name ";
    msg += Quote(name.size() > 200 ? name.substr(0, 200) : name);
    msg += ": ";
    msg.append(why);
    return Status::InvalidArgument(msg);
  };
  if (name.empty()) return bad("empty");
  if (name.size() > kMaxNameLength) return bad("too long");
  if (name.front() == '/') return bad("leading '/'");
  if (name.find('\0') != std::string_view::npos) return bad("contains NUL");
  size_t start = 0;
  while (true) {
    size_t end = name.find('/', start);
    std::string_view comp =
        name.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (comp.empty()) return bad("empty component");
    if (comp == "." || comp == "..") return bad("'.' or '..' component");
    if (comp.size() > kMaxComponentLength) return bad("component longer than 255 bytes");
    if (comp.starts_with(kReservedPrefix)) {
      return bad("components starting with '.hbiss-' are reserved");
    }
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return Status::OK();
}

Status ValidateRename(std::string_view from, std::string_view to) {
  HBISS_RETURN_IF_ERROR(ValidateName(from));
  HBISS_RETURN_IF_ERROR(ValidateName(to));
  if (to == from || (to.size() > from.size() && to.starts_with(from) && to[from.size()] == '/')) {
    return Status::InvalidArgument("cannot move directory " + Quote(from) + " to " + Quote(to) +
                                   ", inside itself");
  }
  return Status::OK();
}

Status Store::BreakLock(const std::string& name) {
  auto l = TryLock(name);
  if (l.ok()) return Status::OK();  // free: nothing to break (released here)
  if (l.status().IsBusy()) {
    return Status::Busy(name + " is held by a live holder; this store's locks go away only "
                               "when their holder stops");
  }
  return l.status();
}

Result<std::string> Store::Get(const std::string& name, uint64_t max_size) {
  HBISS_ASSIGN_OR_RETURN(std::unique_ptr<SegmentReader> reader, Open(name));
  return ReadWhole(*reader, name, max_size);
}

Result<std::string> Store::ReadWhole(SegmentReader& reader, const std::string& name,
                                     uint64_t max_size) {
  uint64_t size = reader.Size();
  if (size > max_size) {
    return Status::InvalidArgument("object " + Quote(name) + " is " + std::to_string(size) +
                                   " bytes, more than the limit of " + std::to_string(max_size));
  }
  std::string out(size, '\0');
  uint64_t done = 0;
  while (done < size) {
    auto* p = reinterpret_cast<uint8_t*>(out.data()) + done;
    HBISS_ASSIGN_OR_RETURN(size_t n, reader.ReadAt(done, std::span<uint8_t>(p, size - done)));
    if (n == 0) {
      return Status::IOError("object " + Quote(name) + " ended at " + std::to_string(done) +
                             " bytes, before its size " + std::to_string(size));
    }
    done += n;
  }
  return out;
}

void RegisterScheme(const std::string& scheme, StoreFactory factory) {
  std::string lower;
  for (char c : scheme) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  MutexLock lock(&g_schemes_mu);
  if (factory == nullptr) {
    Schemes().erase(lower);
  } else {
    Schemes()[lower] = factory;
  }
}

Result<std::unique_ptr<Store>> OpenStore(const std::string& uri, bool create_if_missing) {
  if (uri.empty()) return Status::InvalidArgument("empty store URI");
  if (uri.find('\0') != std::string::npos) {
    return Status::InvalidArgument("store URI contains a NUL byte");
  }
  // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"
  size_t colon = uri.find(':');
  bool has_scheme = colon != std::string::npos && colon > 0 &&
                    std::isalpha(static_cast<unsigned char>(uri[0])) && uri.find('/') > colon;
  if (has_scheme) {
    for (size_t i = 0; i < colon; ++i) {
      if (!IsSchemeChar(uri[i])) has_scheme = false;
    }
  }
  if (!has_scheme) {
    // A plain local path, absolute or relative to the working directory.
    return OpenLocalStore(uri, create_if_missing);
  }
  std::string scheme;
  for (size_t i = 0; i < colon; ++i) {
    scheme += static_cast<char>(std::tolower(static_cast<unsigned char>(uri[i])));
  }
  if (uri.compare(colon, 3, "://") != 0) {
    return Status::InvalidArgument("malformed store URI " + Quote(uri) + ": expected '" + scheme +
                                   "://...'");
  }
  std::string_view rest = std::string_view(uri).substr(colon + 3);
  if (scheme == "file") {
    // file:///path or file://localhost/path.
    if (rest.starts_with("localhost/")) rest.remove_prefix(9);
    if (!rest.starts_with('/')) {
      return Status::InvalidArgument("malformed file URI " + Quote(uri) +
                                     ": expected file:///absolute/path");
    }
    if (rest.find_first_of("?#") != std::string_view::npos) {
      return Status::InvalidArgument("file URI " + Quote(uri) +
                                     " must not have a query or fragment");
    }
    HBISS_ASSIGN_OR_RETURN(std::string path, PercentDecode(rest, uri));
    return OpenLocalStore(path, create_if_missing);
  }
  if (scheme == "mem") {
    if (rest.empty()) return Status::InvalidArgument("mem URI " + Quote(uri) + " has no name");
    for (char c : rest) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
        return Status::InvalidArgument("bad mem store name in " + Quote(uri) +
                                       ": use letters, digits, '.', '_' and '-'");
      }
    }
    return std::unique_ptr<Store>(std::make_unique<MemoryStore>(std::string(rest)));
  }
  StoreFactory factory = nullptr;
  {
    MutexLock lock(&g_schemes_mu);
    auto it = Schemes().find(scheme);
    if (it != Schemes().end()) factory = it->second;
  }
  if (factory == nullptr) {
    return Status::InvalidArgument("unsupported store URI scheme " + Quote(scheme) + " in " +
                                   Quote(uri) + " (this build knows file, mem" +
                                   [] {
                                     std::string s;
                                     MutexLock lock(&g_schemes_mu);
                                     for (const auto& [k, v] : Schemes()) s += ", " + k;
                                     return s;
                                   }() +
                                   ")");
  }
  return factory(uri, create_if_missing);
}

}  // namespace hbiss::store
