// libFuzzer target over the NBD handshake and request parser: the input is
// the byte stream a client sends (the layout and the mode byte are in
// fuzz_stream.h: bit 0 of the first byte prepends a valid handshake so the
// rest lands in the transmission phase). Requests run inline (no worker
// threads) against a 1 MiB MemoryExport. Also feeds the raw bytes to the
// option parsers. nbd_volume_fuzz.cc runs the same streams down to the engine.
//
// Mode bit 7 (0x80) fuzzes TLS instead: the connection offers TLS (bit 6
// makes it require TLS) with an X.509 certificate made at start and a PSK
// user "fuzz", and with bit 5 the stream is prefixed by the client flags and
// NBD_OPT_STARTTLS, so the rest goes straight into GnuTLS's record layer
// through TlsTransport's pull function (the ClientHello parser, alerts, and
// with a captured ClientHello the server's first flight). Without bit 5 the
// stream exercises the STARTTLS state machine (TLS_REQD, STARTTLS twice...).
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>

#include "nbd/fuzz_stream.h"
#include "nbd/memory_export.h"
#include "nbd/protocol.h"
#include "nbd/tls.h"

namespace {

using namespace hbiss::nbd;  // NOLINT

MemoryProvider* Provider() {
  static MemoryProvider* p = [] {
    auto* mp = new MemoryProvider;
    auto vm = std::make_shared<MemoryExport>(fuzz::kExportName, 1 << 20);
    vm->StartDirtyBitmap("s1");  // so SET_META_CONTEXT can select qemu:dirty-bitmap:s1
    mp->Add(vm);
    mp->Add(std::make_shared<MemoryExport>("ro", 1 << 16, true));
    return mp;
  }();
  return p;
}

// A self-signed ECDSA certificate and its key, made once (PEM), plus a PSK.
std::shared_ptr<const TlsCredentials> Credentials() {
  static std::shared_ptr<const TlsCredentials> c = [] {
    gnutls_x509_privkey_t key;
    gnutls_x509_crt_t crt;
    gnutls_x509_privkey_init(&key);
    gnutls_x509_crt_init(&crt);
    gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                 GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
    const time_t now = time(nullptr);
    gnutls_x509_crt_set_version(crt, 3);
    gnutls_x509_crt_set_serial(crt, "\x01", 1);
    gnutls_x509_crt_set_activation_time(crt, now - 3600);
    gnutls_x509_crt_set_expiration_time(crt, now + 86400);
    gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, "localhost", 9);
    gnutls_x509_crt_set_key(crt, key);
    gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0);
    gnutls_datum_t cert_pem = {}, key_pem = {};
    gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &cert_pem);
    gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &key_pem);
    auto creds = TlsCredentials::FromMemory(
        std::string_view(reinterpret_cast<char*>(cert_pem.data), cert_pem.size),
        std::string_view(reinterpret_cast<char*>(key_pem.data), key_pem.size), "", false,
        {{"fuzz", std::string(32, 'k')}});
    gnutls_free(cert_pem.data);
    gnutls_free(key_pem.data);
    gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(key);
    if (!creds.ok()) __builtin_trap();  // the target cannot run without them
    return *creds;
  }();
  return c;
}

void RunTls(uint8_t mode, std::string_view rest) {
  std::string input;
  if (mode & 0x20) {
    input = testing::Be32(kClientFlagFixedNewstyle | kClientFlagNoZeroes) +
            fuzz::Option(kOptStartTls, "");
  }
  input += rest;
  ConnectionOptions o;
  o.workers = 1;
  o.peer = "fuzz";
  o.tls = (mode & 0x40) ? TlsMode::kRequire : TlsMode::kOn;
  o.tls_creds = Credentials();
  o.tls_handshake_timeout_ms = 0;
  Connection c(std::make_unique<BufferTransport>(std::move(input), false), Provider(), o);
  (void)c.Run();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  InfoRequest ir;
  (void)ParseInfoRequest(rest, &ir);
  MetaContextRequest mr;
  (void)ParseMetaContextRequest(rest, &mr);
  if (data[0] & 0x80) {
    RunTls(data[0], rest);
    return 0;
  }
  (void)fuzz::RunInput(data, size, Provider());
  return 0;
}
