#include "nbd/connection.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "util/coding.h"
#include "util/thread.h"

namespace hbiss::nbd {

namespace {

// Set while this thread runs a request it counted in busy_; cleared once the
// request's reply starts to go out (a client waiting for it may send the next
// one at once, which an idle thread should read: see MaybeAddWorker).
thread_local bool tl_busy = false;

bool IsMutating(uint16_t type) {
  return type == kCmdWrite || type == kCmdTrim || type == kCmdWriteZeroes;
}

struct iovec Iov(const void* p, size_t n) {
  return iovec{const_cast<void*>(p), n};
}

}  // namespace

uint32_t ValidateRequest(const Request& r, const TransmissionState& st, std::string* why) {
  switch (r.type) {
    case kCmdRead:
    case kCmdWrite:
    case kCmdFlush:
    case kCmdTrim:
    case kCmdCache:
    case kCmdWriteZeroes:
    case kCmdBlockStatus:
      break;
    default:
      *why = "unknown command " + std::to_string(r.type);
      return kEInval;
  }
  const uint16_t known =
      kCmdFlagFua | kCmdFlagNoHole | kCmdFlagDf | kCmdFlagReqOne | kCmdFlagFastZero;
  if (r.flags & ~known) {
    *why = "unknown command flags";
    return kEInval;
  }
  if (IsMutating(r.type) && (st.eflags & kFlagReadOnly)) {
    *why = "the export is read-only";
    return kEPerm;
  }
  if ((r.flags & (kCmdFlagNoHole | kCmdFlagFastZero)) && r.type != kCmdWriteZeroes) {
    *why = "NO_HOLE and FAST_ZERO are valid only on WRITE_ZEROES";
    return kEInval;
  }
  if ((r.flags & kCmdFlagFastZero) && !(st.eflags & kFlagSendFastZero)) {
    *why = "FAST_ZERO was not advertised";
    return kEInval;
  }
  if ((r.flags & kCmdFlagDf) && (r.type != kCmdRead || !st.structured)) {
    *why = "DF is valid only on READ with structured replies";
    return kEInval;
  }
  if ((r.flags & kCmdFlagReqOne) && r.type != kCmdBlockStatus) {
    *why = "REQ_ONE is valid only on BLOCK_STATUS";
    return kEInval;
  }
  if ((r.flags & kCmdFlagFua) && !(st.eflags & kFlagSendFua)) {
    *why = "FUA was not advertised";
    return kEInval;
  }
  if (r.type == kCmdFlush) {
    if (r.offset != 0 || r.length != 0) {
      *why = "FLUSH needs offset and length 0";
      return kEInval;
    }
    return 0;
  }
  if (r.length == 0) {
    *why = "zero-length request";
    return kEInval;
  }
  if (r.offset > st.size || r.length > st.size - r.offset) {
    *why = "range past the end of the export";
    return (r.type == kCmdWrite || r.type == kCmdWriteZeroes) ? kENoSpc : kEInval;
  }
  if ((r.type == kCmdRead || r.type == kCmdWrite) && r.length > kMaxPayload) {
    *why = "payload larger than the maximum";
    return (r.type == kCmdRead && st.structured) ? kEOverflow : kEInval;
  }
  if (r.type == kCmdBlockStatus && !st.base_allocation && st.dirty_bitmaps == 0) {
    *why = "no meta context was negotiated";
    return kEInval;
  }
  return 0;
}

uint32_t NbdErrorFromStatus(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk: return 0;
    case Status::Code::kInvalidArgument: return kEInval;
    case Status::Code::kNoSpace: return kENoSpc;
    case Status::Code::kNotSupported: return kEInval;
    case Status::Code::kAborted: return kEShutdown;
    default: return kEIo;
  }
}

Connection::Connection(std::unique_ptr<Transport> transport, ExportProvider* provider,
                       ConnectionOptions opts)
    : transport_(std::move(transport)),
      base_(transport_.get()),
      provider_(provider),
      opts_(std::move(opts)),
      client_(opts_.client) {}

// --- Budgets ---------------------------------------------------------------

bool BufferBudget::Acquire(uint64_t bytes, Clock::time_point deadline) {
  MutexLock l(&mu_);
  // Larger than the whole budget: granted alone, so it still makes progress.
  while (used_ + bytes > capacity_ && used_ > 0) {
    if (!cv_.WaitUntil(&mu_, deadline) && Clock::now() >= deadline) {
      if (used_ + bytes > capacity_ && used_ > 0) return false;
      break;
    }
  }
  used_ += bytes;
  peak_ = std::max(peak_, used_);
  return true;
}

void BufferBudget::Release(uint64_t bytes) {
  {
    MutexLock l(&mu_);
    used_ -= std::min(used_, bytes);
  }
  cv_.SignalAll();
}

void BufferBudget::SetCapacity(uint64_t bytes) {
  {
    MutexLock l(&mu_);
    capacity_ = bytes;
  }
  cv_.SignalAll();
}

uint64_t BufferBudget::capacity() {
  MutexLock l(&mu_);
  return capacity_;
}

uint64_t BufferBudget::used() {
  MutexLock l(&mu_);
  return used_;
}

uint64_t BufferBudget::peak() {
  MutexLock l(&mu_);
  return peak_;
}

// --- Connection ------------------------------------------------------------

Connection::~Connection() {
  // Only if Run() did not return normally.
  std::vector<std::thread> left;
  {
    MutexLock l(&mu_);
    stopping_ = true;
    left.swap(workers_);
  }
  for (auto& t : left) t.join();
  if (!gated_.empty() && opts_.gate != nullptr) opts_.gate->Leave(gated_);
}

void Connection::LogRefusal(std::string_view what, std::string_view why) {
  const uint64_t n = ++refusals_;
  if (n <= kMaxLoggedRefusals) {
    spdlog::info("nbd {}: refused {}: {}{}", opts_.peer, what, why,
                 n == kMaxLoggedRefusals ? " (further refusals on this connection are only counted)"
                                         : "");
  }
}

void Connection::Shutdown() { base_->Shutdown(); }

Status Connection::Run() {
  bool go = false;
  if (opts_.handshake_timeout.count() > 0) {
    const auto deadline = Clock::now() + opts_.handshake_timeout;
    transport_->SetReadDeadline(deadline);
    transport_->SetWriteDeadline(deadline);
  }
  Status s = Handshake(&go);
  transport_->SetReadDeadline(kNoDeadline);
  transport_->SetWriteDeadline(kNoDeadline);
  if (!s.ok() && IsTimeout(s)) {
    spdlog::info("nbd {}: handshake not finished within {} ms; dropping the connection",
                 opts_.peer, opts_.handshake_timeout.count());
    s = Status::Aborted("handshake timeout");
  }
  if (s.ok() && go) s = Transmission();
  if (tls_ != nullptr && s.ok()) tls_->Bye();  // every worker has returned
  transport_->Shutdown();  // the peer sees the end of the stream now
  if (refusals_ > kMaxLoggedRefusals) {
    spdlog::info("nbd {}: {} options and requests refused in all ({} not logged)", opts_.peer,
                 refusals_.load(), refusals_.load() - kMaxLoggedRefusals);
  }
  return s;
}

// --- Handshake -------------------------------------------------------------

Status Connection::SendOptReply(uint32_t option, uint32_t type, std::string_view data) {
  uint8_t h[kOptionReplyHeaderSize];
  EncodeBE64(h, kOptReplyMagic);
  EncodeBE32(h + 8, option);
  EncodeBE32(h + 12, type);
  EncodeBE32(h + 16, uint32_t(data.size()));
  struct iovec iov[2] = {Iov(h, sizeof(h)), Iov(data.data(), data.size())};
  MutexLock l(&write_mu_);
  return transport_->WriteV(iov, 2);
}

Status Connection::SendOptError(uint32_t option, uint32_t type, std::string_view msg) {
  if (type == kRepErrUnsup) {
    // Clients probe for options (negotiation, not a refusal of what they need).
    spdlog::debug("nbd {}: {} unsupported", opts_.peer, OptionName(option));
  } else {
    LogRefusal(fmt::format("option {} (reply {:#x})", OptionName(option), type), msg);
  }
  return SendOptReply(option, type, msg.substr(0, kMaxStringSize));
}

namespace {

// What a client is told about a failed Describe of `name`: nothing of the
// store or the engine (the log gets that).
std::string DescribeError(const std::string& name, const Status& s) {
  if (s.code() == Status::Code::kNotFound) {
    return name.empty() ? "no default export; name one" : "no export named '" + name + "'";
  }
  return "export '" + name + "' could not be looked up; see the server log";
}

// The option error for a failed Describe.
uint32_t DescribeErrorType(const Status& s) {
  if (s.code() == Status::Code::kNotFound) return kRepErrUnknown;
  if (s.code() == Status::Code::kAborted) return kRepErrShutdown;
  return kRepErrUnknown;
}

// What a client is told about a failed open (or dirty-map build) of `name`.
std::string OpenError(const std::string& name, const Status& s) {
  switch (s.code()) {
    case Status::Code::kAborted:
      return "the server is shutting down";
    case Status::Code::kBusy:
      return "export '" + name + "' is busy; try again later";
    case Status::Code::kNotFound:
      return "no export named '" + name + "'";
    default:
      return "export '" + name + "' could not be opened; see the server log";
  }
}

// What a client is told about a failed request.
std::string RequestError(const Status& s) {
  switch (s.code()) {
    case Status::Code::kNoSpace: return "no space left; see the server log";
    case Status::Code::kAborted: return "the server is shutting down";
    case Status::Code::kInvalidArgument:
    case Status::Code::kNotSupported: return "invalid request; see the server log";
    default: return "I/O error; see the server log";
  }
}

}  // namespace

uint16_t Connection::TransmissionFlags(const ExportInfo& info) const {
  uint16_t f = kFlagHasFlags | kFlagSendFlush | kFlagSendFua | kFlagCanMultiConn | kFlagSendCache;
  if (structured_) f |= kFlagSendDf;
  if (info.read_only || opts_.read_only) {
    f |= kFlagReadOnly;
  } else {
    f |= kFlagSendTrim | kFlagSendWriteZeroes | kFlagSendFastZero;
  }
  return f;
}

Status Connection::Handshake(bool* go) {
  *go = false;
  uint8_t hello[18];
  EncodeBE64(hello, kNbdMagic);
  EncodeBE64(hello + 8, kIHaveOpt);
  EncodeBE16(hello + 16, kFlagFixedNewstyle | kFlagNoZeroes);
  struct iovec iov = Iov(hello, sizeof(hello));
  {
    MutexLock l(&write_mu_);
    HBISS_RETURN_IF_ERROR(transport_->WriteV(&iov, 1));
  }
  uint8_t cf[4];
  HBISS_RETURN_IF_ERROR(transport_->ReadFull(cf, 4));
  uint32_t client_flags = DecodeBE32(cf);
  if (client_flags & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes)) {
    return Status::InvalidArgument("unknown client flags " + std::to_string(client_flags));
  }
  no_zeroes_ = (client_flags & kClientFlagNoZeroes) != 0;

  std::string data;
  for (uint32_t n = 0;; n++) {
    if (n >= opts_.max_options) return Status::InvalidArgument("too many options");
    uint8_t hb[kOptionHeaderSize];
    Status s = transport_->ReadFull(hb, sizeof(hb));
    if (!s.ok()) {
      if (s.code() == Status::Code::kAborted) return Status::OK();  // client hung up
      return s;
    }
    OptionHeader h = DecodeOptionHeader(hb);
    if (h.magic != kIHaveOpt) return Status::InvalidArgument("bad option magic");
    if (h.length > kMaxOptionLength) {
      return Status::InvalidArgument("option length " + std::to_string(h.length) +
                                     " is too large");
    }
    data.resize(h.length);
    s = transport_->ReadFull(data.data(), h.length);
    if (!s.ok()) return Status::IOError("truncated option: " + s.message());
    spdlog::debug("nbd {}: option {} ({} bytes)", opts_.peer, OptionName(h.option), h.length);

    if (!opts_.refuse.empty()) {
      // Over the server-wide limit: every option is refused with the reason;
      // EXPORT_NAME has no error reply, so it ends the session.
      if (h.option == kOptAbort) {
        (void)SendOptReply(h.option, kRepAck, {});
        return Status::OK();
      }
      if (h.option == kOptExportName) {
        LogRefusal("option NBD_OPT_EXPORT_NAME", opts_.refuse);
        return Status::OK();
      }
      HBISS_RETURN_IF_ERROR(SendOptError(h.option, kRepErrPolicy, opts_.refuse));
      continue;
    }

    if (h.option == kOptStartTls && opts_.tls != TlsMode::kOff) {
      HBISS_RETURN_IF_ERROR(HandleStartTls(data));
      continue;
    }
    if (opts_.tls == TlsMode::kRequire && tls_ == nullptr && h.option != kOptAbort) {
      if (h.option == kOptExportName) {
        spdlog::info("nbd {}: refused: NBD_OPT_EXPORT_NAME without TLS (TLS is required)",
                     opts_.peer);
        return Status::InvalidArgument("NBD_OPT_EXPORT_NAME before STARTTLS; TLS is required");
      }
      spdlog::info("nbd {}: refused {}: TLS is required", opts_.peer, OptionName(h.option));
      HBISS_RETURN_IF_ERROR(
          SendOptError(h.option, kRepErrTlsReqd, "TLS is required: negotiate STARTTLS first"));
      continue;
    }

    switch (h.option) {
      case kOptExportName:
        HBISS_RETURN_IF_ERROR(HandleExportName(data));
        *go = true;
        return Status::OK();
      case kOptAbort:
        (void)SendOptReply(h.option, kRepAck, {});
        return Status::OK();
      case kOptList: {
        if (!data.empty()) {
          HBISS_RETURN_IF_ERROR(SendOptError(h.option, kRepErrInvalid, "LIST takes no data"));
          break;
        }
        auto names = provider_->List();
        if (!names.ok()) {
          spdlog::warn("nbd {}: listing exports: {}", opts_.peer, names.status().ToString());
          HBISS_RETURN_IF_ERROR(SendOptError(h.option, kRepErrUnknown,
                                             "exports could not be listed; see the server log"));
          break;
        }
        for (const auto& name : *names) {
          if (opts_.access != nullptr && !opts_.access->Visible(name, client_)) continue;
          std::string d(4, '\0');
          EncodeBE32(reinterpret_cast<uint8_t*>(d.data()), uint32_t(name.size()));
          d += name;
          HBISS_RETURN_IF_ERROR(SendOptReply(h.option, kRepServer, d));
        }
        HBISS_RETURN_IF_ERROR(SendOptReply(h.option, kRepAck, {}));
        break;
      }
      case kOptStructuredReply:
        if (!data.empty()) {
          HBISS_RETURN_IF_ERROR(
              SendOptError(h.option, kRepErrInvalid, "STRUCTURED_REPLY takes no data"));
          break;
        }
        structured_ = true;
        HBISS_RETURN_IF_ERROR(SendOptReply(h.option, kRepAck, {}));
        break;
      case kOptInfo:
      case kOptGo:
        HBISS_RETURN_IF_ERROR(HandleInfoOrGo(h.option, data, go));
        if (*go) return Status::OK();
        break;
      case kOptListMetaContext:
      case kOptSetMetaContext:
        HBISS_RETURN_IF_ERROR(HandleMetaContext(h.option, data));
        break;
      default:
        HBISS_RETURN_IF_ERROR(SendOptError(h.option, kRepErrUnsup, "unsupported option"));
        break;
    }
  }
}

Status Connection::HandleStartTls(std::string_view data) {
  if (!data.empty()) return SendOptError(kOptStartTls, kRepErrInvalid, "STARTTLS takes no data");
  if (tls_ != nullptr) {
    return SendOptError(kOptStartTls, kRepErrInvalid, "TLS is already negotiated");
  }
  if (opts_.tls_creds == nullptr) {
    spdlog::info("nbd {}: STARTTLS refused: no TLS credentials are loaded", opts_.peer);
    return SendOptError(kOptStartTls, kRepErrPolicy, "TLS is not available on this server");
  }
  HBISS_RETURN_IF_ERROR(SendOptReply(kOptStartTls, kRepAck, {}));
  auto tls = std::make_unique<TlsTransport>(std::move(transport_), opts_.tls_creds);
  tls_ = tls.get();
  transport_ = std::move(tls);
  Status s = tls_->Handshake(opts_.tls_handshake_timeout_ms);
  if (!s.ok()) {
    spdlog::info("nbd {}: {}", opts_.peer, s.message());
    return s;
  }
  client_.tls = true;
  client_.identity = tls_->identity();
  spdlog::info("nbd {}: TLS established ({}), identity {}", opts_.peer, tls_->Describe(),
               client_.identity.empty() ? "none" : "'" + client_.identity + "'");
  // Negotiation starts over: nothing negotiated in plain text carries over.
  structured_ = false;
  meta_base_ = false;
  meta_bitmaps_.clear();
  meta_export_.clear();
  return Status::OK();
}

Result<ExportInfo> Connection::DescribeAllowed(const std::string& name) {
  const AccessPolicy* policy = opts_.access.get();
  if (policy == nullptr || policy->allow_all()) return provider_->Describe(name);
  // Exactly what a client sees for a name that does not exist.
  auto hidden = [&name] { return Status::NotFound("no export named '" + name + "'"); };
  // Checked before Describe too, so a hidden volume is never even looked up
  // ("" is the default export: only its canonical name can be checked).
  if (!name.empty() && policy->Check(name, client_) == AccessMode::kDeny) {
    spdlog::info("nbd {}: export '{}' hidden by the access rules", opts_.peer, name);
    return hidden();
  }
  auto info = provider_->Describe(name);
  if (!info.ok()) {
    if (info.status().code() == Status::Code::kNotFound) {
      spdlog::debug("nbd {}: {}", opts_.peer, info.status().ToString());
      return hidden();
    }
    return info.status();
  }
  AccessMode m = policy->Check(info->name, client_);
  if (m == AccessMode::kDeny) {
    spdlog::info("nbd {}: export '{}' hidden by the access rules", opts_.peer, info->name);
    return hidden();
  }
  if (m == AccessMode::kReadOnly) info->read_only = true;
  return info;
}

Status Connection::HandleExportName(std::string_view data) {
  // No error reply is possible here: an unknown export ends the session.
  if (data.size() > kMaxStringSize) return Status::InvalidArgument("export name too long");
  std::string name(data);
  auto info = DescribeAllowed(name);
  if (!info.ok()) {
    LogRefusal("option NBD_OPT_EXPORT_NAME '" + name + "'", info.status().ToString());
    return info.status().WithContext("NBD_OPT_EXPORT_NAME '" + name + "'");
  }
  if (opts_.gate != nullptr) {
    std::string why;
    if (!opts_.gate->Enter(info->name, &why)) {
      LogRefusal("option NBD_OPT_EXPORT_NAME '" + info->name + "'", why);
      return Status::Busy(why);
    }
    gated_ = info->name;
  }
  auto exp = provider_->Open(info->name);
  if (!exp.ok()) return exp.status().WithContext("open export '" + info->name + "'");
  auto dirty = BuildDirtyMaps(*info, exp->get());
  if (!dirty.ok()) return dirty.status().WithContext("export '" + info->name + "'");
  uint8_t reply[10 + 124] = {};
  uint16_t flags = TransmissionFlags(*info);
  EncodeBE64(reply, info->size);
  EncodeBE16(reply + 8, flags);
  struct iovec iov = Iov(reply, no_zeroes_ ? 10 : sizeof(reply));
  {
    MutexLock l(&write_mu_);
    HBISS_RETURN_IF_ERROR(transport_->WriteV(&iov, 1));
  }
  return EnterTransmission(*info, std::move(*exp), std::move(*dirty));
}

Status Connection::HandleInfoOrGo(uint32_t option, std::string_view data, bool* go) {
  InfoRequest req;
  if (!ParseInfoRequest(data, &req)) {
    return SendOptError(option, kRepErrInvalid, "malformed INFO/GO request");
  }
  auto info = DescribeAllowed(req.name);
  if (!info.ok()) {
    if (info.status().code() != Status::Code::kNotFound) {
      spdlog::warn("nbd {}: {} '{}': {}", opts_.peer, OptionName(option), req.name,
                   info.status().ToString());
    }
    return SendOptError(option, DescribeErrorType(info.status()),
                        DescribeError(req.name, info.status()));
  }
  std::shared_ptr<Export> exp;
  std::vector<std::shared_ptr<const DirtyMap>> dirty;
  if (option == kOptGo) {
    // Admission first: a refused client opens nothing. INFO is not counted:
    // it holds no export and its answer (the size) is the same either way.
    std::string admitted;
    if (opts_.gate != nullptr) {
      std::string why;
      if (!opts_.gate->Enter(info->name, &why)) return SendOptError(option, kRepErrPolicy, why);
      admitted = info->name;
    }
    auto leave = [&] {
      if (!admitted.empty()) opts_.gate->Leave(admitted);
    };
    auto opened = provider_->Open(info->name);
    if (!opened.ok()) {
      leave();
      spdlog::warn("nbd {}: opening export '{}': {}", opts_.peer, info->name,
                   opened.status().ToString());
      return SendOptError(option,
                          opened.status().code() == Status::Code::kAborted ? kRepErrShutdown
                                                                             : kRepErrUnknown,
                          OpenError(info->name, opened.status()));
    }
    exp = std::move(*opened);
    auto built = BuildDirtyMaps(*info, exp.get());
    if (!built.ok()) {
      leave();
      spdlog::warn("nbd {}: export '{}': {}", opts_.peer, info->name, built.status().ToString());
      return SendOptError(option, kRepErrUnknown,
                          built.status().code() == Status::Code::kBusy
                              ? OpenError(info->name, built.status())
                              : "the dirty bitmaps of export '" + info->name +
                                    "' could not be built; see the server log");
    }
    dirty = std::move(*built);
    gated_ = std::move(admitted);
  }
  uint16_t flags = TransmissionFlags(*info);
  uint8_t ex[12];
  EncodeBE16(ex, kInfoExport);
  EncodeBE64(ex + 2, info->size);
  EncodeBE16(ex + 10, flags);
  HBISS_RETURN_IF_ERROR(
      SendOptReply(option, kRepInfo, std::string_view(reinterpret_cast<char*>(ex), 12)));
  bool sent_name = false, sent_desc = false, sent_bs = false;
  for (uint16_t i : req.infos) {
    if (i == kInfoName && !sent_name) {
      sent_name = true;
      std::string d(2, '\0');
      EncodeBE16(reinterpret_cast<uint8_t*>(d.data()), kInfoName);
      HBISS_RETURN_IF_ERROR(SendOptReply(option, kRepInfo, d + info->name));
    } else if (i == kInfoDescription && !sent_desc && !info->description.empty()) {
      sent_desc = true;
      std::string d(2, '\0');
      EncodeBE16(reinterpret_cast<uint8_t*>(d.data()), kInfoDescription);
      HBISS_RETURN_IF_ERROR(SendOptReply(option, kRepInfo, d + info->description));
    } else if (i == kInfoBlockSize && !sent_bs) {
      sent_bs = true;
      uint8_t bs[14];
      EncodeBE16(bs, kInfoBlockSize);
      EncodeBE32(bs + 2, kMinBlockSize);
      EncodeBE32(bs + 6, kPreferredBlockSize);
      EncodeBE32(bs + 10, kMaxPayload);
      HBISS_RETURN_IF_ERROR(
          SendOptReply(option, kRepInfo, std::string_view(reinterpret_cast<char*>(bs), 14)));
    }
  }
  HBISS_RETURN_IF_ERROR(SendOptReply(option, kRepAck, {}));
  if (option == kOptGo) {
    *go = true;
    return EnterTransmission(*info, std::move(exp), std::move(dirty));
  }
  return Status::OK();
}

Status Connection::HandleMetaContext(uint32_t option, std::string_view data) {
  const bool set = option == kOptSetMetaContext;
  if (set) {
    // SET replaces the selection even when it fails.
    meta_base_ = false;
    meta_bitmaps_.clear();
    meta_export_.clear();
  }
  if (!structured_) {
    return SendOptError(option, kRepErrInvalid, "negotiate structured replies first");
  }
  MetaContextRequest req;
  if (!ParseMetaContextRequest(data, &req)) {
    return SendOptError(option, kRepErrInvalid, "malformed meta context request");
  }
  auto info = DescribeAllowed(req.export_name);
  if (!info.ok()) {
    if (info.status().code() != Status::Code::kNotFound) {
      spdlog::warn("nbd {}: {} '{}': {}", opts_.peer, OptionName(option), req.export_name,
                   info.status().ToString());
    }
    return SendOptError(option, DescribeErrorType(info.status()),
                        DescribeError(req.export_name, info.status()));
  }
  // LIST with no query lists everything; SET with none selects nothing.
  const bool all = req.queries.empty() && !set;
  bool want_bitmaps = all;
  for (const auto& q : req.queries) want_bitmaps |= q.starts_with(kQemuNamespace);
  std::vector<std::string> offered;
  if (want_bitmaps) {
    auto b = provider_->DirtyBitmaps(info->name);
    if (!b.ok()) {
      spdlog::warn("nbd {}: dirty bitmaps of '{}': {}", opts_.peer, info->name,
                   b.status().ToString());
      return SendOptError(option, kRepErrUnknown,
                          "the dirty bitmaps of export '" + info->name +
                              "' could not be listed; see the server log");
    }
    offered = std::move(*b);
  }
  bool base = all;
  std::vector<std::string> bitmaps;  // in reply order, each once
  auto add = [&](const std::string& b) {
    if (std::find(bitmaps.begin(), bitmaps.end(), b) == bitmaps.end()) bitmaps.push_back(b);
  };
  if (all) bitmaps = offered;
  for (const auto& q : req.queries) {
    if (q == kBaseAllocation || (!set && q == "base:")) {
      base = true;
    } else if (!set && (q == kQemuNamespace || q == kDirtyBitmapPrefix)) {
      for (const auto& b : offered) add(b);  // a namespace query lists them all
    } else if (q.size() > kDirtyBitmapPrefix.size() && q.starts_with(kDirtyBitmapPrefix)) {
      std::string name = q.substr(kDirtyBitmapPrefix.size());
      if (std::find(offered.begin(), offered.end(), name) != offered.end()) add(name);
    }
    // Anything else names no context of this server: not selected.
  }
  if (set && bitmaps.size() > kMaxDirtyBitmapContexts) {
    return SendOptError(option, kRepErrTooBig,
                        "at most " + std::to_string(kMaxDirtyBitmapContexts) +
                            " dirty bitmaps per connection");
  }
  auto reply = [&](uint32_t id, std::string_view name) {
    std::string d(4, '\0');
    EncodeBE32(reinterpret_cast<uint8_t*>(d.data()), set ? id : 0);
    d += name;
    return SendOptReply(option, kRepMetaContext, d);
  };
  if (base) HBISS_RETURN_IF_ERROR(reply(kBaseAllocationId, kBaseAllocation));
  for (size_t i = 0; i < bitmaps.size(); i++) {
    HBISS_RETURN_IF_ERROR(
        reply(kFirstDirtyBitmapId + uint32_t(i), std::string(kDirtyBitmapPrefix) + bitmaps[i]));
  }
  if (set) {
    meta_base_ = base;
    meta_bitmaps_ = std::move(bitmaps);
    meta_export_ = info->name;
  }
  return SendOptReply(option, kRepAck, {});
}

Result<std::vector<std::shared_ptr<const DirtyMap>>> Connection::BuildDirtyMaps(
    const ExportInfo& info, Export* exp) {
  std::vector<std::shared_ptr<const DirtyMap>> out;
  if (!structured_ || meta_export_ != info.name) return out;
  for (const auto& b : meta_bitmaps_) {
    const auto start = std::chrono::steady_clock::now();
    auto m = exp->DirtyBitmap(b);
    if (!m.ok()) return m.status().WithContext("dirty bitmap '" + b + "'");
    if (*m == nullptr || (*m)->size() != info.size) {
      return Status::Corruption("dirty bitmap '" + b + "' does not cover the export's " +
                                std::to_string(info.size) + " bytes");
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    spdlog::info("nbd {}: dirty bitmap '{}' of '{}': {} bytes dirty in {} runs (granularity {}), "
                 "{} ms",
                 opts_.peer, b, info.name, (*m)->dirty_bytes(), (*m)->runs().size(),
                 (*m)->granularity(), ms);
    out.push_back(std::move(*m));
  }
  return out;
}

Status Connection::EnterTransmission(const ExportInfo& info, std::shared_ptr<Export> exp,
                                     std::vector<std::shared_ptr<const DirtyMap>> dirty) {
  export_ = std::move(exp);
  export_name_ = info.name;
  {
    MutexLock l(&mu_);
    served_export_ = info.name;
  }
  dirty_ = std::move(dirty);
  state_.size = info.size;
  state_.eflags = TransmissionFlags(info);
  state_.structured = structured_;
  state_.base_allocation = structured_ && meta_base_ && meta_export_ == info.name;
  state_.dirty_bitmaps = uint32_t(dirty_.size());
  spdlog::info("nbd {}: export '{}' ({} bytes, flags {:#x}{}{}{})", opts_.peer, info.name,
               info.size, state_.eflags, state_.structured ? ", structured replies" : "",
               state_.base_allocation ? ", base:allocation" : "",
               dirty_.empty() ? "" : fmt::format(", {} dirty bitmaps", dirty_.size()));
  return Status::OK();
}

// --- Transmission ----------------------------------------------------------

Status Connection::DiscardPayload(uint32_t length) {
  uint8_t buf[64 << 10];
  while (length > 0) {
    uint32_t n = std::min<uint32_t>(length, sizeof(buf));
    HBISS_RETURN_IF_ERROR(transport_->ReadFull(buf, n));
    length -= n;
  }
  return Status::OK();
}

Status Connection::Transmission() {
  {
    MutexLock l(&mu_);
    threads_ = 1;  // this one
  }
  threads_used_ = 1;
  ServeLoop();  // more threads join as requests overlap: MaybeAddWorker
  // stopping_ is set: no thread is started any more.
  std::vector<std::thread> workers;
  {
    MutexLock l(&mu_);
    workers.swap(workers_);
  }
  for (auto& t : workers) t.join();
  if (opts_.threads != nullptr) {
    for (size_t i = 0; i < workers.size(); i++) opts_.threads->Release();
  }
  MutexLock l(&mu_);
  return result_;
}

void Connection::MaybeAddWorker() {
  MutexLock l(&mu_);
  if (stopping_ || busy_ < threads_ || threads_ >= std::max(1, opts_.workers)) return;
  if (opts_.threads != nullptr && !opts_.threads->TryAcquire()) return;
  auto t = StartThread("nbd worker", [this] { ServeLoop(); });
  if (!t.ok()) {
    // Fewer workers only bound concurrency lower; the others still serve.
    if (opts_.threads != nullptr) opts_.threads->Release();
    spdlog::warn("nbd {}: serving with {} threads: {}", opts_.peer, threads_,
                 t.status().ToString());
    return;
  }
  workers_.push_back(std::move(*t));
  threads_++;
  threads_used_ = threads_;
}

bool Connection::Reserve(uint64_t bytes) {
  if (opts_.buffers == nullptr) return true;
  while (!opts_.buffers->Acquire(bytes, Clock::now() + std::chrono::milliseconds(100))) {
    if (stopping()) return false;
  }
  return true;
}

void Connection::Unreserve(uint64_t bytes) {
  if (opts_.buffers != nullptr) opts_.buffers->Release(bytes);
}

void Connection::Stop(Status why) {
  {
    MutexLock l(&mu_);
    if (stopping_) return;
    stopping_ = true;
    result_ = std::move(why);
  }
  // Wakes a thread blocked reading; replies still in progress fail.
  transport_->Shutdown();
}

std::string Connection::served_export() {
  MutexLock l(&mu_);
  return served_export_;
}

bool Connection::stopping() {
  MutexLock l(&mu_);
  return stopping_;
}

// Leader/follower: each thread takes the read lock, reads and validates one
// request (with its payload), releases the lock, runs it and sends the reply.
// No hand-off between threads, so a lone request costs no context switch,
// and at most `workers` requests (and payloads) are in flight.
void Connection::ServeLoop() {
  while (true) {
    Work w;
    uint32_t err = 0;
    std::string why;
    uint64_t reserved = 0;
    {
      MutexLock rl(&read_mu_);
      if (stopping()) return;
      uint8_t hb[kRequestSize];
      Status s;
      // Wait for the next request without consuming anything, so that a
      // timeout never leaves half a header read.
      while (true) {
        s = transport_->WaitReadable(opts_.idle_timeout.count() > 0
                                         ? Clock::now() + opts_.idle_timeout
                                         : kNoDeadline);
        if (!IsTimeout(s)) break;
        {
          // Idle only when nothing is in flight: a long request is not idleness.
          MutexLock l(&mu_);
          if (busy_ > 0) continue;
        }
        spdlog::info("nbd {}: no request for {} ms; closing the idle connection", opts_.peer,
                     opts_.idle_timeout.count());
        Stop(Status::Aborted("idle timeout"));
        return;
      }
      // Once a request has begun, the rest of its header comes within io_timeout.
      transport_->SetReadDeadline(opts_.io_timeout.count() > 0 ? Clock::now() + opts_.io_timeout
                                                               : kNoDeadline);
      if (s.ok()) s = transport_->ReadFull(hb, sizeof(hb));
      transport_->SetReadDeadline(kNoDeadline);
      if (!s.ok()) {
        // End of stream at a message boundary is a disconnect without DISC.
        Stop(s.code() == Status::Code::kAborted ? Status::OK() : s);
        return;
      }
      Request r = DecodeRequest(hb);
      if (r.magic != kRequestMagic) {
        Stop(Status::InvalidArgument("bad request magic"));
        return;
      }
      requests_++;
      if (r.type == kCmdDisc) {
        // Requests already read still finish and get their replies.
        MutexLock l(&mu_);
        stopping_ = true;
        return;
      }
      err = ValidateRequest(r, state_, &why);
      if (r.type == kCmdWrite) {
        if (err != 0) {
          if (r.length > kMaxDiscardLength) {
            spdlog::info("nbd {}: WRITE length {} is too large; closing the connection",
                         opts_.peer, r.length);
            Stop(Status::InvalidArgument("WRITE length " + std::to_string(r.length) +
                                         " is too large"));
            return;
          }
        } else {
          // The payload's memory is reserved before any byte of it is read.
          if (!Reserve(r.length)) return;
          reserved = r.length;
        }
        // The client has io_timeout to send the whole payload.
        if (opts_.io_timeout.count() > 0) {
          transport_->SetReadDeadline(Clock::now() + opts_.io_timeout);
        }
        if (err != 0) {
          s = DiscardPayload(r.length);
        } else {
          w.payload.reset(new uint8_t[r.length]);
          s = transport_->ReadFull(w.payload.get(), r.length);
        }
        transport_->SetReadDeadline(kNoDeadline);
        if (!s.ok()) {
          w.payload.reset();
          Unreserve(reserved);
          if (IsTimeout(s)) {
            spdlog::info("nbd {}: WRITE payload of {} bytes not received within {} ms; "
                         "closing the connection",
                         opts_.peer, r.length, opts_.io_timeout.count());
          }
          Stop(Status::IOError("truncated WRITE payload: " + s.message()));
          return;
        }
      }
      w.req = r;
      MutexLock l(&mu_);
      busy_++;
      tl_busy = true;
    }
    MaybeAddWorker();  // every thread busy: another one reads the next request
    Status ss;
    if (err != 0) {
      LogRefusal(CommandName(w.req.type), why);
      ss = SendError(w.req, err, why);
    } else {
      ss = Execute(w);
    }
    w.payload.reset();
    Unreserve(reserved);
    NotBusy();
    if (!ss.ok()) {
      if (IsTimeout(ss)) {
        spdlog::info("nbd {}: the client took no reply for {} ms; closing the connection",
                     opts_.peer, opts_.io_timeout.count());
      } else {
        spdlog::debug("nbd {}: sending a reply failed: {}", opts_.peer, ss.ToString());
      }
      Stop(Status::IOError("sending a reply failed: " + ss.message()));
      return;
    }
  }
}

Status Connection::Execute(Work& w) {
  const Request& r = w.req;
  Export* e = export_.get();
  const bool fua = (r.flags & kCmdFlagFua) != 0;
  Status s;
  switch (r.type) {
    case kCmdRead: {
      if (!Reserve(r.length)) return Status::Aborted("connection stopping");
      struct Held {
        Connection* c;
        uint64_t n;
        ~Held() { c->Unreserve(n); }
      } held{this, r.length};
      std::unique_ptr<uint8_t[]> buf(new uint8_t[r.length]);
      s = e->Read(r.offset, std::span<uint8_t>(buf.get(), r.length));
      if (s.ok()) return SendRead(r, buf.get());
      break;
    }
    case kCmdWrite:
      s = e->Write(r.offset, std::span<const uint8_t>(w.payload.get(), r.length));
      w.payload.reset();
      if (s.ok() && fua) s = e->Flush();
      break;
    case kCmdFlush:
      s = e->Flush();
      break;
    case kCmdTrim:
      s = e->Trim(r.offset, r.length);
      if (s.ok() && fua) s = e->Flush();
      break;
    case kCmdCache:
      s = e->Cache(r.offset, r.length);
      break;
    case kCmdWriteZeroes:
      if ((r.flags & kCmdFlagFastZero) && !e->can_fast_zero()) {
        return SendError(r, kENotSup, "zeroing is not faster than writing");
      }
      s = e->WriteZeroes(r.offset, r.length, (r.flags & kCmdFlagNoHole) == 0);
      if (s.ok() && fua) s = e->Flush();
      break;
    case kCmdBlockStatus:
      return BlockStatus(r);
    default:
      s = Status::InvalidArgument("unknown command");  // unreachable: validated
      break;
  }
  if (s.ok()) return SendSimple(r.cookie, 0, nullptr, 0);
  spdlog::warn("nbd {}: {} offset {} length {} failed: {}", opts_.peer, CommandName(r.type),
               r.offset, r.length, s.ToString());
  return SendError(r, NbdErrorFromStatus(s), RequestError(s));
}

void Connection::NotBusy() {
  if (!tl_busy) return;
  tl_busy = false;
  MutexLock l(&mu_);
  busy_--;
}

Status Connection::SendLocked(const struct iovec* iov, int n) {
  NotBusy();
  MutexLock l(&write_mu_);
  if (opts_.io_timeout.count() > 0) transport_->SetWriteDeadline(Clock::now() + opts_.io_timeout);
  return transport_->WriteV(iov, n);
}

Status Connection::SendSimple(uint64_t cookie, uint32_t error, const uint8_t* data, size_t len) {
  uint8_t h[kSimpleReplySize];
  EncodeBE32(h, kSimpleReplyMagic);
  EncodeBE32(h + 4, error);
  EncodeBE64(h + 8, cookie);
  struct iovec iov[2] = {Iov(h, sizeof(h)), Iov(data, len)};
  return SendLocked(iov, data != nullptr ? 2 : 1);
}

Status Connection::SendError(const Request& r, uint32_t error, std::string_view msg) {
  if (!state_.structured) return SendSimple(r.cookie, error, nullptr, 0);
  msg = msg.substr(0, 1024);
  uint8_t h[kStructuredReplyHeaderSize + 6];
  EncodeBE32(h, kStructuredReplyMagic);
  EncodeBE16(h + 4, kReplyFlagDone);
  EncodeBE16(h + 6, kReplyTypeError);
  EncodeBE64(h + 8, r.cookie);
  EncodeBE32(h + 16, uint32_t(6 + msg.size()));
  EncodeBE32(h + 20, error);
  EncodeBE16(h + 24, uint16_t(msg.size()));
  struct iovec iov[2] = {Iov(h, sizeof(h)), Iov(msg.data(), msg.size())};
  return SendLocked(iov, 2);
}

Status Connection::SendRead(const Request& r, const uint8_t* data) {
  if (!state_.structured) return SendSimple(r.cookie, 0, data, r.length);
  // One OFFSET_DATA chunk carrying DONE: never fragmented, so DF holds too.
  uint8_t h[kStructuredReplyHeaderSize + 8];
  EncodeBE32(h, kStructuredReplyMagic);
  EncodeBE16(h + 4, kReplyFlagDone);
  EncodeBE16(h + 6, kReplyTypeOffsetData);
  EncodeBE64(h + 8, r.cookie);
  EncodeBE32(h + 16, 8 + r.length);
  EncodeBE64(h + 20, r.offset);
  struct iovec iov[2] = {Iov(h, sizeof(h)), Iov(data, r.length)};
  return SendLocked(iov, 2);
}

namespace {

// The payload of one NBD_REPLY_TYPE_BLOCK_STATUS chunk: the context id, then
// (length, flags) descriptors. Add() checks what a backend answered: extents
// must start at the query's offset, be contiguous and nonempty, and stay
// inside the query; adjacent extents with the same flags are merged.
class Descriptors {
 public:
  Descriptors(uint32_t id, uint64_t offset, uint64_t length, bool req_one)
      : pos_(offset), end_(offset + length), req_one_(req_one), body_(4) {
    EncodeBE32(body_.data(), id);
  }

  // False when the extent does not continue the answer as the rules say.
  bool Add(uint64_t offset, uint64_t length, uint32_t flags) {
    if (offset != pos_ || length == 0 || length > end_ - pos_) return false;
    const uint32_t len = uint32_t(length);  // < 2^32: bounded by the request length
    pos_ += length;
    if (n_ > 0 && DecodeBE32(body_.data() + body_.size() - 4) == flags &&
        uint64_t{DecodeBE32(body_.data() + body_.size() - 8)} + len <= 0xffffffffull) {
      uint8_t* prev = body_.data() + body_.size() - 8;
      EncodeBE32(prev, DecodeBE32(prev) + len);
    } else {
      const size_t at = body_.size();
      body_.resize(at + 8);
      EncodeBE32(body_.data() + at, len);
      EncodeBE32(body_.data() + at + 4, flags);
      n_++;
    }
    return true;
  }
  // No more extents belong in this answer.
  bool full() const { return (req_one_ && n_ > 0) || n_ >= kMaxExtentsPerReply || pos_ >= end_; }
  size_t count() const { return n_; }
  std::vector<uint8_t> Take() { return std::move(body_); }

 private:
  uint64_t pos_;
  const uint64_t end_;
  const bool req_one_;
  size_t n_ = 0;
  std::vector<uint8_t> body_;
};

}  // namespace

Status Connection::BlockStatus(const Request& r) {
  const uint64_t len = std::min<uint64_t>(r.length, kMaxBlockStatusQuery);
  const bool req_one = (r.flags & kCmdFlagReqOne) != 0;
  std::vector<std::vector<uint8_t>> chunks;
  if (state_.base_allocation) {
    auto ext = export_->BlockStatus(r.offset, len);
    if (!ext.ok()) {
      spdlog::warn("nbd {}: {} offset {} length {} failed: {}", opts_.peer,
                   CommandName(r.type), r.offset, r.length, ext.status().ToString());
      return SendError(r, NbdErrorFromStatus(ext.status()), RequestError(ext.status()));
    }
    Descriptors d(kBaseAllocationId, r.offset, len, req_one);
    for (const Extent& x : *ext) {
      const uint32_t flags = (x.hole ? kStateHole : 0) | (x.zero ? kStateZero : 0);
      if (!d.Add(x.offset, x.length, flags)) {
        return SendError(r, kEIo, "backend returned inconsistent extents");
      }
      if (d.full()) break;
    }
    if (d.count() == 0) return SendError(r, kEIo, "backend returned no extents");
    chunks.push_back(d.Take());
  }
  for (size_t i = 0; i < dirty_.size(); i++) {
    Descriptors d(kFirstDirtyBitmapId + uint32_t(i), r.offset, len, req_one);
    for (const DirtyExtent& x :
         dirty_[i]->Query(r.offset, len, req_one ? 1 : kMaxExtentsPerReply)) {
      if (!d.Add(x.offset, x.length, x.dirty ? kStateDirty : 0)) {
        return SendError(r, kEIo, "dirty bitmap returned inconsistent extents");
      }
      if (d.full()) break;
    }
    if (d.count() == 0) return SendError(r, kEIo, "dirty bitmap returned no extents");
    chunks.push_back(d.Take());
  }
  // One chunk per context, all in one write; the last one carries DONE.
  std::vector<std::array<uint8_t, kStructuredReplyHeaderSize>> headers(chunks.size());
  std::vector<struct iovec> iov;
  for (size_t i = 0; i < chunks.size(); i++) {
    uint8_t* h = headers[i].data();
    EncodeBE32(h, kStructuredReplyMagic);
    EncodeBE16(h + 4, i + 1 == chunks.size() ? kReplyFlagDone : 0);
    EncodeBE16(h + 6, kReplyTypeBlockStatus);
    EncodeBE64(h + 8, r.cookie);
    EncodeBE32(h + 16, uint32_t(chunks[i].size()));
    iov.push_back(Iov(h, kStructuredReplyHeaderSize));
    iov.push_back(Iov(chunks[i].data(), chunks[i].size()));
  }
  return SendLocked(iov.data(), int(iov.size()));
}

}  // namespace hbiss::nbd
