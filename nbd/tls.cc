#include "nbd/tls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

namespace hbiss::nbd {

namespace {

gnutls_certificate_credentials_t X509(void* p) {
  return static_cast<gnutls_certificate_credentials_t>(p);
}
gnutls_psk_server_credentials_t Psk(void* p) {
  return static_cast<gnutls_psk_server_credentials_t>(p);
}
gnutls_session_t Session(void* p) { return static_cast<gnutls_session_t>(p); }

std::string GnutlsError(int rc) { return std::string(gnutls_strerror(rc)); }

Result<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::NotFound("cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

gnutls_datum_t Datum(std::string_view s) {
  return gnutls_datum_t{reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())),
                        unsigned(s.size())};
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The server's PSK lookup: the session's pointer is its TlsTransport, whose
// credentials hold the keys.
int PskLookup(gnutls_session_t session, const char* username, gnutls_datum_t* key);

}  // namespace

Result<TlsMode> ParseTlsMode(std::string_view s) {
  if (s == "off" || s == "no" || s == "false") return TlsMode::kOff;
  if (s == "on" || s == "yes" || s == "true") return TlsMode::kOn;
  if (s == "require") return TlsMode::kRequire;
  return Status::InvalidArgument("TLS mode '" + std::string(s) +
                                 "': want off, on or require");
}

const char* TlsModeName(TlsMode m) {
  switch (m) {
    case TlsMode::kOff: return "off";
    case TlsMode::kOn: return "on";
    case TlsMode::kRequire: return "require";
  }
  return "?";
}

// --- TlsCredentials --------------------------------------------------------

TlsCredentials::~TlsCredentials() {
  if (x509_ != nullptr) gnutls_certificate_free_credentials(X509(x509_));
  if (psk_cred_ != nullptr) gnutls_psk_free_server_credentials(Psk(psk_cred_));
}

Result<std::map<std::string, std::string>> TlsCredentials::ParsePskFile(std::string_view text) {
  std::map<std::string, std::string> out;
  size_t lineno = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    lineno++;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty() || line[0] == '#') continue;
    const std::string where = "line " + std::to_string(lineno);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return Status::InvalidArgument(where + ": want USERNAME:HEXKEY");
    }
    std::string_view hex = line.substr(colon + 1);
    if (hex.empty() || hex.size() % 2 != 0) {
      return Status::InvalidArgument(where + ": the key must be an even number of hex digits");
    }
    std::string key;
    for (size_t i = 0; i < hex.size(); i += 2) {
      int hi = HexValue(hex[i]), lo = HexValue(hex[i + 1]);
      if (hi < 0 || lo < 0) return Status::InvalidArgument(where + ": the key is not hex");
      key.push_back(char(hi * 16 + lo));
    }
    std::string user(line.substr(0, colon));
    if (!out.emplace(user, std::move(key)).second) {
      return Status::InvalidArgument(where + ": user '" + user + "' is listed twice");
    }
  }
  if (out.empty()) return Status::InvalidArgument("no USERNAME:HEXKEY line");
  return out;
}

Result<std::shared_ptr<const TlsCredentials>> TlsCredentials::FromMemory(
    std::string_view cert_pem, std::string_view key_pem, std::string_view ca_pem,
    bool verify_peer, std::map<std::string, std::string> psk) {
  std::shared_ptr<TlsCredentials> c(new TlsCredentials);
  c->verify_peer_ = verify_peer;
  if (!cert_pem.empty()) {
    gnutls_certificate_credentials_t x = nullptr;
    int rc = gnutls_certificate_allocate_credentials(&x);
    if (rc < 0) return Status::IOError("TLS: " + GnutlsError(rc));
    c->x509_ = x;
    gnutls_datum_t cd = Datum(cert_pem), kd = Datum(key_pem);
    rc = gnutls_certificate_set_x509_key_mem(x, &cd, &kd, GNUTLS_X509_FMT_PEM);
    if (rc < 0) {
      return Status::InvalidArgument("server certificate or key: " + GnutlsError(rc));
    }
    if (!ca_pem.empty()) {
      gnutls_datum_t ad = Datum(ca_pem);
      rc = gnutls_certificate_set_x509_trust_mem(x, &ad, GNUTLS_X509_FMT_PEM);
      if (rc <= 0) {
        return Status::InvalidArgument("CA certificate: " +
                                       (rc < 0 ? GnutlsError(rc) : "no certificate in it"));
      }
    } else if (verify_peer) {
      return Status::InvalidArgument("verifying client certificates needs a CA certificate");
    }
  } else if (verify_peer) {
    return Status::InvalidArgument("verifying client certificates needs X.509 credentials");
  }
  if (!psk.empty()) {
    gnutls_psk_server_credentials_t p = nullptr;
    int rc = gnutls_psk_allocate_server_credentials(&p);
    if (rc < 0) return Status::IOError("TLS: " + GnutlsError(rc));
    c->psk_cred_ = p;
    gnutls_psk_set_server_credentials_function(p, PskLookup);
    c->psk_ = std::move(psk);
  }
  if (c->x509_ == nullptr && c->psk_cred_ == nullptr) {
    return Status::InvalidArgument("TLS needs a certificate (--tls-certificates) or a PSK file "
                                   "(--tls-psk)");
  }
  return std::shared_ptr<const TlsCredentials>(std::move(c));
}

Result<std::shared_ptr<const TlsCredentials>> TlsCredentials::Load(const TlsOptions& o) {
  std::string cert = o.cert_file, key = o.key_file, ca = o.ca_file;
  if (!o.cert_dir.empty()) {
    if (cert.empty()) cert = o.cert_dir + "/server-cert.pem";
    if (key.empty()) key = o.cert_dir + "/server-key.pem";
    if (ca.empty() && o.verify_peer) ca = o.cert_dir + "/ca-cert.pem";
  }
  std::string cert_pem, key_pem, ca_pem;
  if (!cert.empty() || !key.empty()) {
    if (cert.empty() || key.empty()) {
      return Status::InvalidArgument("a server certificate needs both a certificate and a key");
    }
    HBISS_ASSIGN_OR_RETURN(cert_pem, ReadWholeFile(cert));
    HBISS_ASSIGN_OR_RETURN(key_pem, ReadWholeFile(key));
  }
  if (!ca.empty()) {
    HBISS_ASSIGN_OR_RETURN(ca_pem, ReadWholeFile(ca));
  }
  std::map<std::string, std::string> psk;
  if (!o.psk_file.empty()) {
    HBISS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(o.psk_file));
    auto parsed = ParsePskFile(text);
    if (!parsed.ok()) return parsed.status().WithContext("PSK file " + o.psk_file);
    psk = std::move(*parsed);
  }
  auto c = FromMemory(cert_pem, key_pem, ca_pem, o.verify_peer, std::move(psk));
  if (!c.ok()) {
    return cert.empty() ? c.status() : c.status().WithContext("TLS certificate " + cert);
  }
  std::string origin;
  if (!cert.empty()) {
    origin = "X.509 " + cert;
    if (o.verify_peer) origin += " (client certificates verified against " + ca + ")";
  }
  if (!o.psk_file.empty()) {
    origin += std::string(origin.empty() ? "" : ", ") + "PSK " + o.psk_file + " (" +
              std::to_string((*c)->psk_.size()) + " users)";
  }
  const_cast<TlsCredentials*>(c->get())->origin_ = origin;
  return c;
}

const std::string* TlsCredentials::PskKey(const std::string& user) const {
  auto it = psk_.find(user);
  return it == psk_.end() ? nullptr : &it->second;
}

std::string TlsCredentials::Describe() const {
  if (!origin_.empty()) return origin_;
  std::string d = has_x509() ? "X.509" : "";
  if (has_psk()) d += std::string(d.empty() ? "" : " + ") + "PSK";
  return d;
}

// --- TlsTransport ----------------------------------------------------------

namespace {

int PskLookup(gnutls_session_t session, const char* username, gnutls_datum_t* key) {
  auto* c = static_cast<const TlsCredentials*>(gnutls_session_get_ptr(session));
  const std::string* k = (c != nullptr && username != nullptr) ? c->PskKey(username) : nullptr;
  if (k == nullptr) return -1;  // GnuTLS fails the handshake as for a wrong key
  key->data = static_cast<unsigned char*>(gnutls_malloc(k->size()));
  if (key->data == nullptr) return -1;
  std::memcpy(key->data, k->data(), k->size());
  key->size = unsigned(k->size());
  return 0;
}

// The verified client certificate's CN, else its DN; "" on any failure.
std::string PeerName(gnutls_session_t s) {
  unsigned n = 0;
  const gnutls_datum_t* certs = gnutls_certificate_get_peers(s, &n);
  if (certs == nullptr || n == 0) return "";
  gnutls_x509_crt_t crt;
  if (gnutls_x509_crt_init(&crt) < 0) return "";
  std::string out;
  if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0) {
    char buf[1024];
    size_t len = sizeof(buf);
    if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &len) >= 0) {
      out.assign(buf, len);
    } else {
      len = sizeof(buf);
      if (gnutls_x509_crt_get_dn(crt, buf, &len) >= 0) out.assign(buf, len);
    }
  }
  gnutls_x509_crt_deinit(crt);
  while (!out.empty() && out.back() == '\0') out.pop_back();
  return out;
}

}  // namespace

TlsTransport::TlsTransport(std::unique_ptr<Transport> lower,
                           std::shared_ptr<const TlsCredentials> creds)
    : lower_(std::move(lower)), creds_(std::move(creds)) {}

TlsTransport::~TlsTransport() {
  if (session_ != nullptr) gnutls_deinit(Session(session_));
}

ssize_t TlsTransport::Pull(void* self, void* buf, size_t n) {
  auto* t = static_cast<TlsTransport*>(self);
  auto r = t->lower_->ReadSome(buf, n);
  if (!r.ok()) {
    {
      MutexLock l(&t->err_mu_);
      t->pull_error_ = r.status();
    }
    gnutls_transport_set_errno(Session(t->session_), EIO);
    return -1;
  }
  return ssize_t(*r);
}

Status TlsTransport::LowerError(bool pull) {
  MutexLock l(&err_mu_);
  return pull ? pull_error_ : push_error_;
}

Status TlsTransport::WaitReadable(Clock::time_point deadline) {
  if (handshaken_ && gnutls_record_check_pending(Session(session_)) > 0) return Status::OK();
  return lower_->WaitReadable(deadline);
}

ssize_t TlsTransport::Push(void* self, const void* buf, size_t n) {
  auto* t = static_cast<TlsTransport*>(self);
  struct iovec v = {const_cast<void*>(buf), n};
  if (Status w = t->lower_->WriteV(&v, 1); !w.ok()) {
    {
      MutexLock l(&t->err_mu_);
      t->push_error_ = w;
    }
    gnutls_transport_set_errno(Session(t->session_), EIO);
    return -1;
  }
  return ssize_t(n);
}

ssize_t TlsTransport::PushV(void* self, const struct iovec* iov, int n) {
  auto* t = static_cast<TlsTransport*>(self);
  size_t total = 0;
  for (int i = 0; i < n; i++) total += iov[i].iov_len;
  if (Status w = t->lower_->WriteV(iov, n); !w.ok()) {
    {
      MutexLock l(&t->err_mu_);
      t->push_error_ = w;
    }
    gnutls_transport_set_errno(Session(t->session_), EIO);
    return -1;
  }
  return ssize_t(total);
}

int TlsTransport::PullTimeout(void* self, unsigned ms) {
  auto* t = static_cast<TlsTransport*>(self);
  auto r = t->lower_->WaitReadable(ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : int(ms));
  if (!r.ok()) {
    gnutls_transport_set_errno(Session(t->session_), EIO);
    return -1;
  }
  return *r ? 1 : 0;
}

Status TlsTransport::Handshake(int timeout_ms) {
  gnutls_session_t s = nullptr;
  int rc = gnutls_init(&s, GNUTLS_SERVER);
  if (rc < 0) return Status::IOError("TLS: gnutls_init: " + GnutlsError(rc));
  session_ = s;
  gnutls_session_set_ptr(s, const_cast<TlsCredentials*>(creds_.get()));
  if (creds_->has_psk()) {
    const char* err = nullptr;
    rc = gnutls_priority_set_direct(s, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", &err);
  } else {
    rc = gnutls_set_default_priority(s);
  }
  if (rc < 0) return Status::IOError("TLS: priority: " + GnutlsError(rc));
  if (creds_->has_x509()) {
    rc = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, X509(creds_->x509_));
    if (rc < 0) return Status::IOError("TLS: " + GnutlsError(rc));
    gnutls_certificate_server_set_request(
        s, creds_->verify_peer() ? GNUTLS_CERT_REQUIRE : GNUTLS_CERT_IGNORE);
  }
  if (creds_->has_psk()) {
    rc = gnutls_credentials_set(s, GNUTLS_CRD_PSK, Psk(creds_->psk_cred_));
    if (rc < 0) return Status::IOError("TLS: " + GnutlsError(rc));
  }
  gnutls_transport_set_ptr(s, this);
  gnutls_transport_set_pull_function(
      s, &TlsTransport::Pull);
  gnutls_transport_set_push_function(
      s, &TlsTransport::Push);
  static_assert(sizeof(giovec_t) == sizeof(struct iovec));
  gnutls_transport_set_vec_push_function(
      s, [](gnutls_transport_ptr_t p, const giovec_t* iov, int n) -> ssize_t {
        return PushV(p, reinterpret_cast<const struct iovec*>(iov), n);
      });
  gnutls_transport_set_pull_timeout_function(
      s, &TlsTransport::PullTimeout);
  // GnuTLS waits through PullTimeout (WaitReadable) against this deadline.
  gnutls_handshake_set_timeout(s, timeout_ms > 0 ? unsigned(timeout_ms) : 0);
  do {
    rc = gnutls_handshake(s);
  } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
  if (rc < 0) {
    std::string why = GnutlsError(rc);
    if (rc == GNUTLS_E_TIMEDOUT) {
      why = "the client sent no complete handshake within " + std::to_string(timeout_ms) + " ms";
    } else if (rc == GNUTLS_E_SRP_PWD_ERROR && creds_->has_psk()) {
      why += " (a PSK username not in the PSK file)";
    } else if (rc == GNUTLS_E_PUSH_ERROR || rc == GNUTLS_E_PULL_ERROR) {
      why += " (the connection broke or was shut down)";
    }
    return Status::IOError("TLS handshake failed: " + why);
  }
  if (gnutls_auth_get_type(s) == GNUTLS_CRD_PSK) {
    const char* u = gnutls_psk_server_get_username(s);
    identity_ = u != nullptr ? u : "";
  } else if (creds_->verify_peer()) {
    unsigned status = 0;
    rc = gnutls_certificate_verify_peers2(s, &status);
    if (rc < 0) return Status::InvalidArgument("TLS client certificate: " + GnutlsError(rc));
    if (status != 0) {
      gnutls_datum_t out = {};
      std::string why = "not trusted";
      if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) >= 0) {
        why.assign(reinterpret_cast<char*>(out.data), out.size);
        gnutls_free(out.data);
      }
      return Status::InvalidArgument("TLS client certificate rejected: " + why);
    }
    identity_ = PeerName(s);
    if (identity_.empty()) {
      return Status::InvalidArgument("TLS client certificate has no usable name");
    }
  }
  handshaken_ = true;
  return Status::OK();
}

Result<size_t> TlsTransport::ReadSome(void* buf, size_t n) {
  while (true) {
    ssize_t r = gnutls_record_recv(Session(session_), buf, n);
    if (r >= 0) return size_t(r);
    if (r == GNUTLS_E_PREMATURE_TERMINATION) return size_t(0);
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) continue;
    // A TLS 1.3 key update or a rehandshake attempt is not an error.
    if (gnutls_error_is_fatal(int(r)) == 0) continue;
    if (r == GNUTLS_E_PULL_ERROR || r == GNUTLS_E_PUSH_ERROR) {
      Status lower = LowerError(r == GNUTLS_E_PULL_ERROR);
      if (IsTimeout(lower)) return lower;
    }
    return Status::IOError("TLS: " + GnutlsError(int(r)));
  }
}

Status TlsTransport::ReadFull(void* buf, size_t n) {
  if (!handshaken_) return Status::IOError("TLS: no session");
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  while (got < n) {
    auto r = ReadSome(p + got, n - got);
    if (!r.ok()) return r.status();
    if (*r == 0) {
      if (got == 0) return Status::Aborted("end of stream");
      return Status::IOError("truncated message: end of stream");
    }
    got += *r;
  }
  return Status::OK();
}

Status TlsTransport::WriteV(const struct iovec* iov, int iovcnt) {
  if (!handshaken_) return Status::IOError("TLS: no session");
  gnutls_session_t s = Session(session_);
  // Cork so that a reply's header and payload share records.
  gnutls_record_cork(s);
  for (int i = 0; i < iovcnt; i++) {
    const auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
    size_t left = iov[i].iov_len;
    while (left > 0) {
      ssize_t w = gnutls_record_send(s, p, left);
      if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED) continue;
      if (w < 0) {
        (void)gnutls_record_uncork(s, 0);
        if (w == GNUTLS_E_PUSH_ERROR && IsTimeout(LowerError(false))) return LowerError(false);
        return Status::IOError("TLS: " + GnutlsError(int(w)));
      }
      p += w;
      left -= size_t(w);
    }
  }
  while (true) {
    int rc = gnutls_record_uncork(s, GNUTLS_RECORD_WAIT);
    if (rc >= 0) return Status::OK();
    if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) continue;
    if (rc == GNUTLS_E_PUSH_ERROR && IsTimeout(LowerError(false))) return LowerError(false);
    return Status::IOError("TLS: " + GnutlsError(rc));
  }
}

void TlsTransport::Shutdown() { lower_->Shutdown(); }

void TlsTransport::Bye() {
  if (handshaken_) (void)gnutls_bye(Session(session_), GNUTLS_SHUT_WR);
}

std::string TlsTransport::Describe() const {
  if (session_ == nullptr) return "no session";
  char* d = gnutls_session_get_desc(Session(session_));
  std::string out = d != nullptr ? d : "?";
  gnutls_free(d);
  return out;
}

}  // namespace hbiss::nbd
