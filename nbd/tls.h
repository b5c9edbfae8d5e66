// NBD over TLS with GnuTLS: server credentials (X.509 and/or PSK) and a
// Transport that runs a TLS session over another Transport through custom
// push/pull functions, so it works over a socket (FdTransport) and over a
// fixed byte string (BufferTransport, the fuzz target) alike.
//
// Credentials follow nbdkit's layout and formats:
//   - X.509: a directory with server-cert.pem, server-key.pem and (for
//     client-certificate verification) ca-cert.pem, as nbdkit
//     --tls-certificates DIR; or the three files named one by one.
//   - PSK: a file of `username:hexkey` lines (psktool's format, nbdkit
//     --tls-psk FILE). Blank lines and lines starting with '#' are skipped.
// TlsCredentials are immutable once loaded and shared (shared_ptr) by every
// connection that started with them, so a reload (Server::SetTls) gives new
// connections the new credentials and leaves running ones untouched.
//
// Identity: the PSK username, or with client-certificate verification the
// verified client certificate's CN (its whole DN when it has no CN); empty
// for an anonymous X.509 client.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "nbd/transport.h"
#include "util/mutex.h"
#include "util/status.h"
#include "util/thread_annotations.h"

namespace hbiss::nbd {

// qemu-nbd/nbdkit --tls semantics: off (STARTTLS unsupported), on (TLS
// offered, plain clients served too), require (every option but STARTTLS and
// ABORT is refused before TLS).
enum class TlsMode { kOff, kOn, kRequire };

// "off", "on" or "require" (also "no"/"yes"/"false"/"true"); InvalidArgument
// otherwise.
Result<TlsMode> ParseTlsMode(std::string_view s);
const char* TlsModeName(TlsMode m);

struct TlsOptions {
  std::string cert_dir;   // nbdkit layout; the explicit files below override it
  std::string cert_file;  // PEM server certificate (chain)
  std::string key_file;   // PEM private key
  std::string ca_file;    // PEM CA bundle for client certificates
  bool verify_peer = false;  // require a client certificate signed by the CA
  std::string psk_file;      // username:hexkey lines
};

class TlsCredentials {
 public:
  // Loads and checks every file now, so a bad file fails at startup or at
  // reload, not at a client's handshake. InvalidArgument/NotFound name the
  // file and GnuTLS's reason. Needs X.509 or PSK or both; verify_peer needs
  // a CA.
  static Result<std::shared_ptr<const TlsCredentials>> Load(const TlsOptions& o);
  // The same from PEM text and PSK keys (username -> raw key), for tests
  // and the fuzz target. Empty cert_pem: PSK only.
  static Result<std::shared_ptr<const TlsCredentials>> FromMemory(
      std::string_view cert_pem, std::string_view key_pem, std::string_view ca_pem,
      bool verify_peer, std::map<std::string, std::string> psk);

  // Parses psktool's format; InvalidArgument names the line.
  static Result<std::map<std::string, std::string>> ParsePskFile(std::string_view text);

  ~TlsCredentials();
  TlsCredentials(const TlsCredentials&) = delete;
  TlsCredentials& operator=(const TlsCredentials&) = delete;

  bool has_x509() const { return x509_ != nullptr; }
  bool has_psk() const { return psk_cred_ != nullptr; }
  bool verify_peer() const { return verify_peer_; }
  // What the log says about these credentials (no key material).
  std::string Describe() const;
  // The raw key for PSK user `user`, or nullptr.
  const std::string* PskKey(const std::string& user) const;

 private:
  friend class TlsTransport;
  TlsCredentials() = default;

  void* x509_ = nullptr;      // gnutls_certificate_credentials_t
  void* psk_cred_ = nullptr;  // gnutls_psk_server_credentials_t
  std::map<std::string, std::string> psk_;
  bool verify_peer_ = false;
  std::string origin_;  // for Describe()
};

// The server side of one TLS session over `lower`.
//
// Thread safety: after Handshake(), one thread may read (ReadFull) while
// another writes (WriteV), as GnuTLS allows; Shutdown() from any thread.
// Handshake() and Bye() must not run concurrently with anything but
// Shutdown().
class TlsTransport : public Transport {
 public:
  // Takes over `lower`; `creds` stays alive as long as this transport.
  TlsTransport(std::unique_ptr<Transport> lower, std::shared_ptr<const TlsCredentials> creds);
  ~TlsTransport() override;

  // Runs the TLS handshake, and verifies the client certificate when the
  // credentials ask for it; a handshake that takes longer than timeout_ms
  // (0: no limit of its own) fails. Fails (IOError or PermissionDenied-like
  // InvalidArgument, with GnuTLS's reason) if the handshake fails, the
  // peer's certificate does not verify, or the lower transport fails or is
  // shut down. The connection cannot be used after a failure.
  Status Handshake(int timeout_ms);

  Status ReadFull(void* buf, size_t n) override;
  Result<size_t> ReadSome(void* buf, size_t n) override;
  Status WriteV(const struct iovec* iov, int iovcnt) override;
  // Shuts the lower transport down (no close_notify: another thread may be
  // mid-record). Safe from any thread.
  void Shutdown() override;
  // Deadlines are the lower transport's: every record is read and written
  // through it, so the handshake, idle and I/O timeouts hold over TLS as
  // they do without it, and a deadline's failure is reported as such
  // (IsTimeout).
  void SetReadDeadline(Clock::time_point d) override { lower_->SetReadDeadline(d); }
  void SetWriteDeadline(Clock::time_point d) override { lower_->SetWriteDeadline(d); }
  // OK at once when GnuTLS holds decrypted bytes not yet read; else waits
  // for the lower transport.
  Status WaitReadable(Clock::time_point deadline) override;
  // Sends close_notify (best effort). REQUIRES: no concurrent read or write.
  void Bye();

  // The client's identity (see the file comment); valid after Handshake().
  const std::string& identity() const { return identity_; }
  // "TLS1.3 / AES-256-GCM / PSK" or similar, for the log.
  std::string Describe() const;

 private:
  // GnuTLS's transport callbacks; `self` is this transport.
  static ssize_t Pull(void* self, void* buf, size_t n);
  static ssize_t Push(void* self, const void* buf, size_t n);
  // Writes several records with one WriteV (a corked reply's records).
  static ssize_t PushV(void* self, const struct iovec* iov, int n);
  static int PullTimeout(void* self, unsigned ms);

  // The lower transport's last failure in Pull / Push, so that a timeout
  // surfaces as a timeout rather than as GnuTLS's "pull function" error.
  Status LowerError(bool pull) EXCLUDES(err_mu_);

  std::unique_ptr<Transport> lower_;
  std::shared_ptr<const TlsCredentials> creds_;
  Mutex err_mu_;
  Status pull_error_ GUARDED_BY(err_mu_);
  Status push_error_ GUARDED_BY(err_mu_);
  void* session_ = nullptr;  // gnutls_session_t
  std::string identity_;
  bool handshaken_ = false;
};

}  // namespace hbiss::nbd
