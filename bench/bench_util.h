// What the benchmark programs share: dying with a message, and parsing the
// sizes they take on their command lines. Messages start with the program's
// name.
#pragma once

#include <errno.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "util/status.h"

namespace hbiss::bench {

[[noreturn]] inline void Die(const std::string& what, const Status& st) {
  std::fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what.c_str(),
               st.ToString().c_str());
  std::exit(1);
}

[[noreturn]] inline void DieErrno(const std::string& what) {
  std::fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what.c_str(),
               std::strerror(errno));
  std::exit(1);
}

// Bytes, or a number with a K, M, G or T suffix (binary units); exits with
// status 2 on anything else.
inline uint64_t ParseSizeOrDie(const std::string& s) {
  char* end = nullptr;
  errno = 0;
  const uint64_t n = std::strtoull(s.c_str(), &end, 10);
  const std::string suf = end;
  int shift = 0;
  if (suf == "K" || suf == "k") {
    shift = 10;
  } else if (suf == "M" || suf == "m") {
    shift = 20;
  } else if (suf == "G" || suf == "g") {
    shift = 30;
  } else if (suf == "T" || suf == "t") {
    shift = 40;
  } else if (!suf.empty() || end == s.c_str() || errno != 0) {
    std::fprintf(stderr, "%s: bad size %s\n", program_invocation_short_name, s.c_str());
    std::exit(2);
  }
  return n << shift;
}

// Creates a new directory $TMPDIR/<prefix>XXXXXX (or under `fallback` when
// TMPDIR is unset) and returns its path; exits on failure.
inline std::string MakeTempDirOrDie(const std::string& prefix, const char* fallback) {
  const char* t = std::getenv("TMPDIR");
  std::string path =
      std::string(t != nullptr && t[0] != '\0' ? t : fallback) + "/" + prefix + "XXXXXX";
  if (mkdtemp(path.data()) == nullptr) DieErrno("mkdtemp");
  return path;
}

}  // namespace hbiss::bench
