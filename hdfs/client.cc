#include "hdfs/client.h"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "hdfs/counters.h"
#include "hdfs/wire.h"
#include "util/thread.h"

namespace hbiss::hdfs {

namespace {

using Clock = std::chrono::steady_clock;
constexpr char kClientProtocol[] = "org.apache.hadoop.hdfs.protocol.ClientProtocol";
constexpr char kDatanodeProtocol[] = "org.apache.hadoop.hdfs.protocol.ClientDatanodeProtocol";

std::string DefaultUser() {
  if (const char* u = std::getenv("HADOOP_USER_NAME"); u != nullptr && *u != '\0') return u;
  if (passwd* pw = ::getpwuid(::geteuid()); pw != nullptr) return pw->pw_name;
  return "hbiss";
}

std::string LastComponent(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

}  // namespace

Result<HdfsUri> ParseHdfsUri(std::string_view uri) {
  constexpr std::string_view kScheme = "hdfs://";
  if (uri.size() < kScheme.size() || uri.substr(0, kScheme.size()) != kScheme) {
    return Status::InvalidArgument(fmt::format("not an hdfs:// URI: '{}'", uri));
  }
  std::string_view rest = uri.substr(kScheme.size());
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "/" : rest.substr(slash);
  HdfsUri out;
  size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos) {
    std::string_view port = authority.substr(colon + 1);
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc() || p != port.data() + port.size() || v == 0 || v > 65535) {
      return Status::InvalidArgument(fmt::format("bad port in URI '{}'", uri));
    }
    out.port = uint16_t(v);
    authority = authority.substr(0, colon);
  }
  if (authority.empty()) return Status::InvalidArgument(fmt::format("no host in URI '{}'", uri));
  out.host = std::string(authority);
  if (path.find('\0') != std::string_view::npos) {
    return Status::InvalidArgument("URI path contains NUL");
  }
  // Collapse repeated and trailing slashes.
  std::string norm;
  for (char c : path) {
    if (c == '/' && !norm.empty() && norm.back() == '/') continue;
    norm.push_back(c);
  }
  if (norm.size() > 1 && norm.back() == '/') norm.pop_back();
  out.path = norm;
  return out;
}

FileStatus ToFileStatus(const pb::HdfsFileStatus& s) {
  FileStatus f;
  f.name = s.path();
  f.is_dir = s.file_type() == pb::HdfsFileStatus::IS_DIR;
  f.length = s.length();
  f.modification_time_ms = s.modification_time();
  f.replication = s.block_replication();
  f.block_size = s.blocksize();
  f.file_id = s.file_id();
  f.permission = s.permission().perm();
  f.owner = s.owner();
  f.group = s.group();
  return f;
}

// ------------------------------------------------------------------------------- Client

Client::Client(const std::string& host, uint16_t port, ClientOptions options)
    : options_(std::move(options)) {
  if (options_.user.empty()) options_.user = DefaultUser();
  if (options_.client_name.empty()) {
    std::string id = RandomClientId();
    options_.client_name = "hbiss_";
    for (int i = 0; i < 8; i++) options_.client_name += fmt::format("{:02x}", uint8_t(id[i]));
  }
  RpcOptions ro;
  ro.user = options_.user;
  ro.protocol = kClientProtocol;
  ro.retry_deadline_ms = options_.rpc_retry_deadline_ms;
  nn_ = std::make_unique<RpcClient>(host, port, ro);
}

Result<std::unique_ptr<Client>> Client::Connect(const std::string& host, uint16_t port,
                                                ClientOptions options) {
  if (host.empty()) return Status::InvalidArgument("empty NameNode host");
  std::unique_ptr<Client> c(new Client(host, port, std::move(options)));
  // The lease renewer; without it Connect fails (its Status is retryable) rather than
  // hand out a client whose writers would lose their leases.
  HBISS_ASSIGN_OR_RETURN(c->renewer_, StartThread("hdfs lease renewer " + c->client_name(),
                                                  [raw = c.get()] { raw->RenewerLoop(); }));
  return c;
}

Client::~Client() {
  {
    MutexLock l(&lease_mu_);
    stop_ = true;
  }
  lease_cv_.SignalAll();
  if (renewer_.joinable()) renewer_.join();
}

Status Client::NnCall(const char* method, const google::protobuf::MessageLite& req,
                      google::protobuf::MessageLite* resp) {
  return nn_->Call(method, req, resp);
}

void Client::WriterOpened() {
  MutexLock l(&lease_mu_);
  open_writers_++;
  lease_cv_.SignalAll();
}

void Client::WriterClosed() {
  MutexLock l(&lease_mu_);
  open_writers_--;
}

void Client::RenewerLoop() {
  MutexLock l(&lease_mu_);
  while (!stop_) {
    lease_cv_.WaitFor(&lease_mu_, std::chrono::milliseconds(options_.lease_renew_interval_ms));
    if (stop_) break;
    if (open_writers_ == 0) continue;
    l.Unlock();
    pb::RenewLeaseRequest req;
    req.set_client_name(options_.client_name);
    pb::RenewLeaseResponse resp;
    Status st = NnCall("renewLease", req, &resp);
    if (st.ok()) {
      last_renewal_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                             std::memory_order_relaxed);
    } else {
      spdlog::warn("hdfs: renewing lease of {}: {}", client_name(), st.ToString());
    }
    l.Lock();
  }
}

std::chrono::steady_clock::time_point Client::LastLeaseRenewal() const {
  return std::chrono::steady_clock::time_point(
      std::chrono::steady_clock::duration(last_renewal_ns_.load(std::memory_order_relaxed)));
}

Status CheckLeaseAge(std::chrono::steady_clock::duration since_renewal,
                     std::chrono::milliseconds limit) {
  if (since_renewal <= limit) return Status::OK();
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(since_renewal).count();
  return Status::IOError(fmt::format(
      "no lease renewal succeeded for {} s (limit {} s): another client may take the lock",
      s, limit.count() / 1000));
}

Status Client::FileLock::Check() const {
  const auto last = std::max(acquired_, client_->LastLeaseRenewal());
  return CheckLeaseAge(std::chrono::steady_clock::now() - last,
                       std::chrono::milliseconds(client_->options().lease_self_fence_ms));
}

Result<pb::FsServerDefaults> Client::GetServerDefaults() {
  {
    MutexLock l(&defaults_mu_);
    if (have_defaults_) return defaults_;
  }
  pb::GetServerDefaultsRequest req;
  pb::GetServerDefaultsResponse resp;
  HBISS_RETURN_IF_ERROR(NnCall("getServerDefaults", req, &resp));
  MutexLock l(&defaults_mu_);
  defaults_ = resp.server_defaults();
  have_defaults_ = true;
  return defaults_;
}

Result<FileStatus> Client::GetFileInfo(const std::string& path) {
  pb::GetFileInfoRequest req;
  req.set_src(path);
  pb::GetFileInfoResponse resp;
  HBISS_RETURN_IF_ERROR(NnCall("getFileInfo", req, &resp));
  if (!resp.has_fs()) return Status::NotFound(fmt::format("{}: no such file or directory", path));
  FileStatus f = ToFileStatus(resp.fs());
  f.name = LastComponent(path);
  return f;
}

Result<std::vector<FileStatus>> Client::List(const std::string& path) {
  std::vector<FileStatus> out;
  std::string start_after;
  for (;;) {
    pb::GetListingRequest req;
    req.set_src(path);
    req.set_start_after(start_after);
    req.set_need_location(false);
    pb::GetListingResponse resp;
    HBISS_RETURN_IF_ERROR(NnCall("getListing", req, &resp));
    if (!resp.has_dir_list()) {
      return Status::NotFound(fmt::format("{}: no such file or directory", path));
    }
    const auto& dl = resp.dir_list();
    for (const auto& s : dl.partial_listing()) out.push_back(ToFileStatus(s));
    if (dl.remaining_entries() == 0 || dl.partial_listing_size() == 0) break;
    start_after = dl.partial_listing(dl.partial_listing_size() - 1).path();
  }
  // A file lists as itself, named by its last path component.
  if (out.size() == 1 && out[0].name.empty()) out[0].name = LastComponent(path);
  return out;
}

Status Client::Mkdirs(const std::string& path, uint32_t permission) {
  pb::MkdirsRequest req;
  req.set_src(path);
  req.mutable_masked()->set_perm(permission);
  req.set_create_parent(true);
  pb::MkdirsResponse resp;
  HBISS_RETURN_IF_ERROR(NnCall("mkdirs", req, &resp));
  if (!resp.result()) return Status::IOError(fmt::format("mkdirs {} failed", path));
  return Status::OK();
}

Result<bool> Client::Delete(const std::string& path, bool recursive) {
  pb::DeleteRequest req;
  req.set_src(path);
  req.set_recursive(recursive);
  pb::DeleteResponse resp;
  HBISS_RETURN_IF_ERROR(NnCall("delete", req, &resp));
  return resp.result();
}

Status Client::Rename(const std::string& src, const std::string& dst, bool overwrite) {
  pb::Rename2Request req;
  req.set_src(src);
  req.set_dst(dst);
  req.set_overwrite_dest(overwrite);
  pb::Rename2Response resp;
  return NnCall("rename2", req, &resp);
}

Result<bool> Client::RecoverLease(const std::string& path) {
  pb::RecoverLeaseRequest req;
  req.set_src(path);
  req.set_client_name(options_.client_name);
  pb::RecoverLeaseResponse resp;
  HBISS_RETURN_IF_ERROR(NnCall("recoverLease", req, &resp));
  return resp.result();
}

Status Client::RecoverLeaseAndWait(const std::string& path, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int sleep_ms = 200;
  for (;;) {
    HBISS_ASSIGN_OR_RETURN(bool closed, RecoverLease(path));
    if (closed) return Status::OK();
    if (Clock::now() > deadline) {
      return Status::Busy(fmt::format("{}: lease recovery did not finish in {} ms", path,
                                      timeout_ms));
    }
    SleepMs(sleep_ms);
    sleep_ms = std::min(sleep_ms * 2, 2000);
  }
}

// The length a reader may rely on for a block still being written. Every location is asked
// (Java's DFSInputStream.readBlockLength takes the first answer; hbiss takes the smallest):
// after a writer dies, its replicas stop at different lengths (each DataNode counts what
// its downstream acknowledged, and the last packets reached some of them only), and a
// reader that took the longest would parse records whose bytes a shorter replica, asked for
// the next read, does not have. Every replica holds at least what the writer hflushed, and
// so does the smallest answer. A node answering RetriableException is asked again every
// 500 ms until the DataNode timeout, but only while no node has answered; when every
// location says it has no such replica, the block was allocated but its pipeline never set
// up (the writer died in between), so it holds nothing: length 0. A replica a restarted
// DataNode reloaded from disk answers "no length" (-1, sent as uint64): that is not an
// answer either.
Result<uint64_t> Client::VisibleLength(const pb::LocatedBlock& lb) {
  std::vector<const pb::DatanodeInfo*> ask;
  for (const auto& dn : lb.locs()) ask.push_back(&dn);
  const auto deadline = Clock::now() + std::chrono::milliseconds(options_.datanode_timeout_ms);
  int not_found = 0;
  std::optional<uint64_t> shortest;
  Status last = Status::IOError("no locations");
  while (!ask.empty()) {
    std::vector<const pb::DatanodeInfo*> again;
    for (const pb::DatanodeInfo* dn : ask) {
      RpcOptions ro;
      ro.user = options_.user;
      ro.protocol = kDatanodeProtocol;
      ro.retry = false;
      ro.call_timeout_ms = 10000;
      RpcClient rpc(dn->id().ip_addr(), uint16_t(dn->id().ipc_port()), ro);
      pb::GetReplicaVisibleLengthRequest req;
      *req.mutable_block() = lb.b();
      pb::GetReplicaVisibleLengthResponse resp;
      Status st = rpc.Call("getReplicaVisibleLength", req, &resp);
      if (st.ok() && resp.length() <= uint64_t(std::numeric_limits<int64_t>::max())) {
        const uint64_t len = uint64_t(resp.length());
        shortest = shortest ? std::min(*shortest, len) : len;
        continue;
      }
      if (st.ok()) {
        st = Status::IOError(fmt::format("{} has no visible length for its replica",
                                         DatanodeName(*dn)));
      } else if (st.message().find("ReplicaNotFoundException") != std::string::npos) {
        not_found++;
      } else if (st.message().find("RetriableException") != std::string::npos) {
        again.push_back(dn);
      }
      last = st;
    }
    if (shortest || again.empty() || Clock::now() > deadline) break;
    SleepMs(500);
    ask = std::move(again);
  }
  if (shortest) return *shortest;
  if (lb.locs_size() > 0 && not_found == lb.locs_size()) return uint64_t{0};
  return last.WithContext(
      fmt::format("cannot obtain the length of block {} being written", lb.b().block_id()));
}

Result<std::unique_ptr<FileReader>> Client::Open(const std::string& path) {
  auto r = std::unique_ptr<FileReader>(new FileReader(this, path));
  HBISS_RETURN_IF_ERROR(r->Refresh());
  return r;
}

Result<std::unique_ptr<FileWriter>> Client::Create(const std::string& path,
                                                   const CreateOptions& opts) {
  uint64_t block_size = opts.block_size;
  uint32_t replication = opts.replication;
  if (block_size == 0 || replication == 0) {
    HBISS_ASSIGN_OR_RETURN(auto d, GetServerDefaults());
    if (block_size == 0) block_size = d.block_size();
    if (replication == 0) replication = d.replication();
  }
  if (block_size == 0 || block_size % 512 != 0) {
    return Status::InvalidArgument(fmt::format("block size {} is not a multiple of 512",
                                               block_size));
  }
  pb::CreateRequest req;
  req.set_src(path);
  req.mutable_masked()->set_perm(opts.permission);
  req.set_client_name(options_.client_name);
  req.set_create_flag(pb::CREATE_FLAG_CREATE | (opts.overwrite ? pb::CREATE_FLAG_OVERWRITE : 0));
  req.set_create_parent(opts.create_parent);
  req.set_replication(replication);
  req.set_block_size(block_size);
  pb::CreateResponse resp;
  HBISS_RETURN_IF_ERROR(NnCall("create", req, &resp));
  if (!resp.has_fs()) return Status::IOError(fmt::format("create {}: no file status", path));
  WriterOpened();
  return std::unique_ptr<FileWriter>(
      new FileWriter(this, path, resp.fs().file_id(), block_size, replication, opts.sync_block));
}

Result<std::unique_ptr<Client::FileLock>> Client::TryLockFile(const std::string& path) {
  pb::CreateRequest req;
  req.set_src(path);
  req.mutable_masked()->set_perm(0644);
  req.set_client_name(options_.client_name);
  req.set_create_flag(pb::CREATE_FLAG_CREATE);
  req.set_create_parent(true);
  req.set_replication(3);
  HBISS_ASSIGN_OR_RETURN(auto defaults, GetServerDefaults());
  req.set_replication(defaults.replication());
  req.set_block_size(defaults.block_size());
  pb::CreateResponse resp;
  Status st = NnCall("create", req, &resp);
  uint64_t file_id = 0;
  if (st.ok()) {
    file_id = resp.fs().file_id();
  } else if (st.IsAlreadyExists()) {
    // The lock file exists: take it over if it is closed (a released lock).
    pb::AppendRequest areq;
    areq.set_src(path);
    areq.set_client_name(options_.client_name);
    areq.set_flag(pb::CREATE_FLAG_APPEND);
    pb::AppendResponse aresp;
    st = NnCall("append", areq, &aresp);
    if (!st.ok()) {
      if (st.IsBusy()) return Status::Busy(fmt::format("{} is held: {}", path, st.message()));
      return st;
    }
    if (aresp.has_block() && aresp.block().b().num_bytes() > 0) {
      // Not one of our lock files; give it back untouched.
      pb::CompleteRequest creq;
      creq.set_src(path);
      creq.set_client_name(options_.client_name);
      *creq.mutable_last() = aresp.block().b();
      pb::CompleteResponse cresp;
      (void)NnCall("complete", creq, &cresp);
      return Status::InvalidArgument(fmt::format("{} is not an empty lock file", path));
    }
    file_id = aresp.has_stat() ? aresp.stat().file_id() : 0;
  } else {
    return st;
  }
  WriterOpened();
  return std::unique_ptr<FileLock>(new FileLock(this, path, file_id));
}

Client::FileLock::~FileLock() { (void)Release(); }

Status Client::FileLock::Release() {
  if (released_) return Status::OK();
  released_ = true;
  pb::CompleteRequest req;
  req.set_src(path_);
  req.set_client_name(client_->client_name());
  req.set_file_id(file_id_);
  pb::CompleteResponse resp;
  Status st;
  for (int i = 0; i < 50; i++) {
    st = client_->NnCall("complete", req, &resp);
    if (!st.ok() || resp.result()) break;
    SleepMs(100);
  }
  client_->WriterClosed();
  return st;
}

// ------------------------------------------------------------------------------- FileReader

Status FileReader::Refresh() {
  pb::GetBlockLocationsRequest req;
  req.set_src(path_);
  req.set_offset(0);
  req.set_length(uint64_t(std::numeric_limits<int64_t>::max()));
  pb::GetBlockLocationsResponse resp;
  HBISS_RETURN_IF_ERROR(client_->NnCall("getBlockLocations", req, &resp));
  if (!resp.has_locations()) {
    return Status::NotFound(fmt::format("{}: no such file", path_));
  }
  // A last block under construction whose replicas no DataNode has reported yet (a
  // NameNode that restarted before the DataNodes did) has no locations: when it holds
  // bytes, wait for the reports, as Java does (3 more tries, 4 s apart), rather than read
  // the file short.
  for (int retries = 3; retries > 0; retries--) {
    const auto& l = resp.locations();
    if (!l.under_construction() || l.is_last_block_complete() || !l.has_last_block() ||
        l.last_block().locs_size() > 0 || l.last_block().b().num_bytes() == 0) {
      break;
    }
    spdlog::warn("hdfs: {}: the last block has no locations yet; retrying in 4 s", path_);
    SleepMs(4000);
    resp.Clear();
    HBISS_RETURN_IF_ERROR(client_->NnCall("getBlockLocations", req, &resp));
    if (!resp.has_locations()) return Status::NotFound(fmt::format("{}: no such file", path_));
  }
  const auto& lbs = resp.locations();
  std::vector<pb::LocatedBlock> blocks;
  uint64_t length = lbs.file_length();
  for (const auto& b : lbs.blocks()) {
    if (b.offset() < lbs.file_length()) blocks.push_back(b);
  }
  if (lbs.under_construction() && !lbs.is_last_block_complete() && lbs.has_last_block()) {
    pb::LocatedBlock last = lbs.last_block();
    if (last.locs_size() == 0 && last.b().num_bytes() > 0) {
      return Status::IOError(
          fmt::format("{}: could not obtain the locations of the last block", path_), true);
    }
    // No locations and no bytes: nothing was written to it.
    uint64_t vis = 0;
    if (last.locs_size() > 0) {
      HBISS_ASSIGN_OR_RETURN(vis, client_->VisibleLength(last));
    }
    last.mutable_b()->set_num_bytes(vis);
    if (vis > 0) blocks.push_back(last);
    length = lbs.file_length() + vis;
  }
  // Sanity: blocks must tile [0, length).
  uint64_t pos = 0;
  for (const auto& b : blocks) {
    if (b.offset() != pos) {
      return Status::Corruption(fmt::format("{}: block list has a gap at offset {}", path_, pos));
    }
    pos += b.b().num_bytes();
  }
  if (pos != length) {
    return Status::Corruption(
        fmt::format("{}: blocks cover {} bytes of a {}-byte file", path_, pos, length));
  }
  MutexLock l(&mu_);
  // Block ids are never reused, and appends keep a file's blocks: another first block means
  // that the path now names another file (a rename replaced it). Its blocks must not be
  // mixed into this reader.
  if (fetched_ && !blocks_.empty() &&
      (blocks.empty() || blocks[0].b().block_id() != blocks_[0].b().block_id())) {
    return Status::NotFound(
        fmt::format("{}: the file was replaced or deleted while it was being read", path_));
  }
  if (!fetched_) {  // the length is fixed by the first fetch
    length_ = length;
    under_construction_ = lbs.under_construction();
    fetched_ = true;
  }
  blocks_ = std::move(blocks);
  dead_nodes_.clear();
  return Status::OK();
}

void FileReader::ReportBadReplica(const pb::LocatedBlock& lb, const pb::DatanodeInfo& dn) {
  pb::ReportBadBlocksRequest req;
  pb::LocatedBlock* bad = req.add_blocks();
  *bad->mutable_b() = lb.b();
  bad->set_offset(lb.offset());
  *bad->add_locs() = dn;
  bad->set_corrupt(false);
  *bad->mutable_block_token() = lb.block_token();
  for (int i = 0; i < lb.locs_size() && i < lb.storage_ids_size(); i++) {
    if (lb.locs(i).id().datanode_uuid() == dn.id().datanode_uuid()) {
      bad->add_storage_ids(lb.storage_ids(i));
    }
  }
  pb::ReportBadBlocksResponse resp;
  Status st = client_->NnCall("reportBadBlocks", req, &resp);
  if (st.ok()) {
    reported_bad_++;
  } else {
    spdlog::warn("hdfs: reporting the corrupt replica of block {} on {}: {}", lb.b().block_id(),
                 DatanodeName(dn), st.ToString());
  }
}

bool FileReader::ReadFromStream(const pb::LocatedBlock& lb, uint64_t off_in_block,
                                uint64_t len, uint8_t* out) {
  // Another thread using the stream means this read is not its continuation.
  if (!stream_mu_.TryLock()) return false;
  bool done = ReadFromStreamLocked(lb, off_in_block, len, out);
  stream_mu_.Unlock();
  return done;
}

bool FileReader::ReadFromStreamLocked(const pb::LocatedBlock& lb, uint64_t off_in_block,
                                      uint64_t len, uint8_t* out) {
  if (stream_ == nullptr) return false;
  if (stream_->block_id() != lb.b().block_id() || stream_->position() != off_in_block ||
      off_in_block + len > stream_->end()) {
    return false;
  }
  Status st = stream_->Read(out, len);
  if (st.ok()) {
    if (stream_->position() == stream_->end()) {
      (void)stream_->Finish();
      stream_.reset();
    }
    return true;
  }
  spdlog::warn("hdfs: {}; trying another replica", st.ToString());
  failovers_++;
  if (st.IsCorruption()) ReportBadReplica(lb, stream_dn_info_);
  {
    MutexLock l(&mu_);
    dead_nodes_.insert(stream_dn_);
  }
  stream_.reset();
  return false;
}

Status FileReader::ReadFromBlock(const pb::LocatedBlock& first_lb, uint64_t off_in_block,
                                 uint64_t len, uint8_t* out, bool stream) {
  if (ReadFromStream(first_lb, off_in_block, len, out)) return Status::OK();
  pb::LocatedBlock lb = first_lb;
  const uint64_t block_len = lb.b().num_bytes();
  // Stream the rest of the block only when there is a rest.
  const uint64_t ask = stream && off_in_block + len < block_len ? block_len - off_in_block : len;
  Status last = Status::IOError(fmt::format("block {} has no locations", lb.b().block_id()));
  bool all_corrupt = true;
  constexpr int kRounds = 3;
  for (int round = 0; round < kRounds; round++) {
    for (const auto& dn : lb.locs()) {
      std::string name = DatanodeName(dn);
      {
        MutexLock l(&mu_);
        if (dead_nodes_.count(name) > 0) continue;
      }
      auto r = BlockReader::Open(client_->client_name(), lb, dn, off_in_block, ask,
                                 client_->options().datanode_timeout_ms);
      Status st = r.status();
      if (st.ok()) st = (*r)->Read(out, len);
      if (st.ok() && ask == len) st = (*r)->Finish();
      if (st.ok()) {
        if (ask > len && stream_mu_.TryLock()) {  // keep it unless another read has one
          stream_ = std::move(r).value();
          stream_dn_ = name;
          stream_dn_info_ = dn;
          stream_mu_.Unlock();
        }
        return st;
      }
      spdlog::warn("hdfs: {}; trying another replica", st.ToString());
      failovers_++;
      if (st.IsCorruption()) ReportBadReplica(lb, dn);
      if (!st.IsCorruption()) all_corrupt = false;
      last = st;
      MutexLock l(&mu_);
      dead_nodes_.insert(name);
    }
    if (round + 1 == kRounds) break;
    // Every known replica failed: refetch locations (they may have moved) and try again.
    SleepMs(500 * (round + 1));
    HBISS_RETURN_IF_ERROR(Refresh());
    MutexLock l(&mu_);
    for (const auto& b : blocks_) {
      if (b.b().block_id() == lb.b().block_id()) {
        lb = b;
        lb.mutable_b()->set_num_bytes(block_len);
      }
    }
  }
  if (all_corrupt && last.IsCorruption()) {
    return Status::Corruption(fmt::format("{}: every replica of block {} failed its checksum: {}",
                                          path_, lb.b().block_id(), last.message()));
  }
  return last.WithContext(fmt::format("{}: no replica of block {} could be read", path_,
                                      lb.b().block_id()));
}

Result<size_t> FileReader::PRead(uint64_t offset, std::span<uint8_t> out) {
  if (offset >= length_ || out.empty()) return size_t{0};
  uint64_t n = std::min<uint64_t>(out.size(), length_ - offset);
  std::vector<pb::LocatedBlock> todo;
  {
    MutexLock l(&mu_);
    for (const auto& b : blocks_) {
      uint64_t start = b.offset(), end = b.offset() + b.b().num_bytes();
      if (end > offset && start < offset + n) todo.push_back(b);
    }
  }
  // A read that starts where the previous one ended is sequential: stream the block.
  const bool sequential = offset == last_end_.load();
  uint64_t done = 0;
  for (const auto& b : todo) {
    uint64_t start = b.offset();
    uint64_t from = std::max(start, offset + done);
    uint64_t to = std::min(start + b.b().num_bytes(), offset + n);
    if (from >= to) continue;
    HBISS_RETURN_IF_ERROR(ReadFromBlock(b, from - start, to - from,
                                        out.data() + (from - offset), sequential));
    done = to - offset;
  }
  last_end_ = offset + done;
  if (done != n) {
    return Status::IOError(fmt::format("{}: blocks end at {} before {}", path_, offset + done,
                                       offset + n));
  }
  return size_t(n);
}

// ------------------------------------------------------------------------------- FileWriter

FileWriter::FileWriter(Client* client, std::string path, uint64_t file_id, uint64_t block_size,
                       uint32_t replication, bool sync_block)
    : client_(client), path_(std::move(path)), file_id_(file_id), block_size_(block_size),
      replication_(replication), sync_block_(sync_block),
      packet_data_(std::clamp<uint32_t>(client->options().write_packet_bytes / kBytesPerChecksum,
                                        1, 8192) * kBytesPerChecksum) {}

FileWriter::~FileWriter() {
  if (!closed_) {
    pipeline_.reset();
    client_->WriterClosed();
  }
}

Status FileWriter::SetError(Status st) {
  if (!st.ok() && error_.ok()) error_ = st;
  return st;
}

Status FileWriter::StartBlock() {
  Status last;
  for (int attempt = 0; attempt < 4; attempt++) {
    pb::AddBlockRequest req;
    req.set_src(path_);
    req.set_client_name(client_->client_name());
    if (have_previous_) *req.mutable_previous() = previous_;
    for (const auto& dn : excluded_) *req.add_exclude_nodes() = dn;
    req.set_file_id(file_id_);
    pb::AddBlockResponse resp;
    // The NameNode refuses a new block until the previous one has its minimum replication.
    auto deadline = Clock::now() + std::chrono::seconds(60);
    int sleep_ms = 100;
    for (;;) {
      last = client_->NnCall("addBlock", req, &resp);
      if (last.ok() || Clock::now() > deadline) break;
      if (last.message().find("NotReplicatedYetException") == std::string::npos) break;
      SleepMs(sleep_ms);
      sleep_ms = std::min(sleep_ms * 2, 2000);
    }
    HBISS_RETURN_IF_ERROR(last);
    block_ = resp.block();
    nodes_.assign(block_.locs().begin(), block_.locs().end());
    storage_ids_.assign(block_.storage_ids().begin(), block_.storage_ids().end());
    if (nodes_.empty()) return Status::IOError(fmt::format("{}: addBlock gave no DataNodes", path_));

    PipelineSetup s;
    s.client_name = client_->client_name();
    s.block = block_.b();
    s.token = block_.block_token();
    s.targets = nodes_;
    s.storage_ids = storage_ids_;
    s.stage = pb::OpWriteBlock::PIPELINE_SETUP_CREATE;
    s.latest_gs = block_.b().generation_stamp();
    s.bytes_per_checksum = kBytesPerChecksum;
    s.timeout_ms = client_->options().datanode_timeout_ms;
    int bad = 0;
    auto p = Pipeline::Open(s, &bad);
    if (p.ok()) {
      pipeline_ = std::move(p).value();
      have_block_ = true;
      sent_bytes_ = 0;
      pkt_offset_ = 0;
      pkt_data_.clear();
      new_block_since_fsync_ = true;
      return Status::OK();
    }
    last = p.status();
    if (bad < 0) {
      // Not a DataNode's fault (this host could not start a thread): fail this write or
      // open with the Status instead of excluding healthy nodes.
      spdlog::warn("hdfs: {}; abandoning the block", last.ToString());
    } else {
      spdlog::warn("hdfs: {}; abandoning the block and excluding {}", last.ToString(),
                   DatanodeName(nodes_[size_t(bad)]));
      excluded_.push_back(nodes_[size_t(bad)]);
    }
    pb::AbandonBlockRequest ab;
    *ab.mutable_b() = block_.b();
    ab.set_src(path_);
    ab.set_holder(client_->client_name());
    ab.set_file_id(file_id_);
    pb::AbandonBlockResponse abr;
    HBISS_RETURN_IF_ERROR(client_->NnCall("abandonBlock", ab, &abr));
    if (bad < 0) break;
  }
  return last.WithContext(fmt::format("{}: could not set up a write pipeline", path_));
}

Status FileWriter::SendPacket(bool last_in_block, bool sync) {
  PipelinePacket p;
  std::string wire_bytes;
  p.seqno = next_seqno_++;
  p.last_in_block = last_in_block;
  uint64_t data_end = pkt_offset_ + pkt_data_.size();
  if (last_in_block) {
    // With sync_block, each DataNode fsyncs the replica before it finalizes it.
    p.data_end = sent_bytes_;
    wire::EncodePacket(int64_t(sent_bytes_), p.seqno, true, sync_block_, {}, kBytesPerChecksum,
                       &wire_bytes);
  } else if (data_end <= sent_bytes_) {
    // Nothing new (an hsync after an hflush): an empty packet that asks for the sync.
    p.data_end = sent_bytes_;
    wire::EncodePacket(int64_t(sent_bytes_), p.seqno, false, sync, {}, kBytesPerChecksum,
                       &wire_bytes);
  } else {
    p.data_end = data_end;
    wire::EncodePacket(int64_t(pkt_offset_), p.seqno, false, sync, pkt_data_, kBytesPerChecksum,
                       &wire_bytes);
    sent_bytes_ = data_end;
    // A partial last chunk is sent again, whole, with the next packet.
    uint64_t tail = data_end % kBytesPerChecksum;
    pkt_offset_ = data_end - tail;
    pkt_data_.erase(0, pkt_data_.size() - tail);
  }
  p.wire = std::make_shared<const std::string>(std::move(wire_bytes));
  Status st = pipeline_->Send(std::move(p));
  if (!st.ok()) return Recover();
  return Status::OK();
}

Status FileWriter::Write(std::span<const uint8_t> data) {
  if (!error_.ok()) return error_;
  if (closed_) return Status::InvalidArgument(fmt::format("{}: write after close", path_));
  while (!data.empty()) {
    if (!have_block_) HBISS_RETURN_IF_ERROR(SetError(StartBlock()));
    uint64_t block_pos = pkt_offset_ + pkt_data_.size();
    uint64_t room = std::min<uint64_t>(block_size_ - block_pos, packet_data_ - pkt_data_.size());
    size_t n = size_t(std::min<uint64_t>(room, data.size()));
    pkt_data_.append(reinterpret_cast<const char*>(data.data()), n);
    data = data.subspan(n);
    size_ += n;
    bool block_full = pkt_offset_ + pkt_data_.size() == block_size_;
    if (pkt_data_.size() == packet_data_ || block_full) {
      HBISS_RETURN_IF_ERROR(SetError(SendPacket(false, false)));
    }
    if (block_full) HBISS_RETURN_IF_ERROR(SetError(EndBlock()));
  }
  return Status::OK();
}

Status FileWriter::EndBlock() {
  if (pkt_offset_ + pkt_data_.size() > sent_bytes_) {
    HBISS_RETURN_IF_ERROR(SendPacket(false, false));
  }
  HBISS_RETURN_IF_ERROR(SendPacket(true, false));
  for (;;) {
    Status st = pipeline_->WaitAllAcked();
    if (st.ok()) break;
    HBISS_RETURN_IF_ERROR(Recover());
  }
  previous_ = block_.b();
  previous_.set_num_bytes(sent_bytes_);
  have_previous_ = true;
  pipeline_.reset();
  have_block_ = false;
  pkt_offset_ = 0;
  pkt_data_.clear();
  sent_bytes_ = 0;
  return Status::OK();
}

Status FileWriter::Flush(bool sync) {
  if (!error_.ok()) return error_;
  if (closed_) return Status::InvalidArgument(fmt::format("{}: flush after close", path_));
  if (!have_block_) return Status::OK();  // every byte so far is in finished blocks
  if (pkt_offset_ + pkt_data_.size() > sent_bytes_ || sync) {
    HBISS_RETURN_IF_ERROR(SetError(SendPacket(false, sync)));
  }
  for (;;) {
    Status st = pipeline_->WaitAllAcked();
    if (st.ok()) break;
    HBISS_RETURN_IF_ERROR(SetError(Recover()));
  }
  if (sync || new_block_since_fsync_) {
    // Records the block list (and, for hsync, the length) in the NameNode.
    pb::FsyncRequest req;
    req.set_src(path_);
    req.set_client(client_->client_name());
    req.set_last_block_length(int64_t(sent_bytes_));
    req.set_file_id(file_id_);
    pb::FsyncResponse resp;
    HBISS_RETURN_IF_ERROR(SetError(client_->NnCall("fsync", req, &resp)));
    new_block_since_fsync_ = false;
  }
  return Status::OK();
}

Status FileWriter::Hflush() { return Flush(false); }
Status FileWriter::Hsync() { return Flush(true); }

Status FileWriter::AddReplacement(uint64_t acked) {
  pb::GetAdditionalDatanodeRequest req;
  req.set_src(path_);
  *req.mutable_blk() = block_.b();
  req.mutable_blk()->set_num_bytes(acked);
  for (const auto& dn : nodes_) *req.add_existings() = dn;
  for (const auto& dn : excluded_) *req.add_excludes() = dn;
  req.set_num_additional_nodes(1);
  req.set_client_name(client_->client_name());
  for (const auto& id : storage_ids_) req.add_existing_storage_uuids(id);
  req.set_file_id(file_id_);
  pb::GetAdditionalDatanodeResponse resp;
  HBISS_RETURN_IF_ERROR(client_->NnCall("getAdditionalDatanode", req, &resp));
  const auto& lb = resp.block();
  int added = -1;
  for (int i = 0; i < lb.locs_size(); i++) {
    bool known = false;
    for (const auto& dn : nodes_) {
      known = known || dn.id().datanode_uuid() == lb.locs(i).id().datanode_uuid();
    }
    if (!known) added = i;
  }
  if (added < 0 || lb.locs_size() != int(nodes_.size()) + 1) {
    return Status::IOError("getAdditionalDatanode returned no new DataNode");
  }
  // A neighbour of the new node copies the replica to it, as the Java client does.
  const auto& src = lb.locs(added == 0 ? 1 : added - 1);
  pb::OpTransferBlock op;
  auto* base = op.mutable_header()->mutable_base_header();
  *base->mutable_block() = block_.b();
  base->mutable_block()->set_num_bytes(acked);
  *base->mutable_token() = block_.block_token();
  op.mutable_header()->set_client_name(client_->client_name());
  *op.add_targets() = lb.locs(added);
  op.add_target_storage_types(pb::DISK);
  if (added < lb.storage_ids_size()) op.add_target_storage_ids(lb.storage_ids(added));
  auto sock = Socket::Connect(src.id().ip_addr(), uint16_t(src.id().xfer_port()), 10000,
                              std::max(client_->options().datanode_timeout_ms, 120000));
  if (!sock.ok()) return sock.status();
  std::string msg = wire::EncodeOp(wire::kOpTransferBlock, op);
  HBISS_RETURN_IF_ERROR((*sock)->WriteAll(msg.data(), msg.size()));
  pb::BlockOpResponse r;
  HBISS_RETURN_IF_ERROR(ReadDelimited(sock->get(), &r, wire::kMaxDelimited));
  if (r.status() != pb::SUCCESS) {
    return Status::IOError(fmt::format("TRANSFER_BLOCK from {} to {}: {} {}", DatanodeName(src),
                                       DatanodeName(lb.locs(added)), pb::DtStatus_Name(r.status()),
                                       r.message()));
  }
  spdlog::info("hdfs: {}: added DataNode {} to the pipeline of block {}", path_,
               DatanodeName(lb.locs(added)), block_.b().block_id());
  nodes_.assign(lb.locs().begin(), lb.locs().end());
  storage_ids_.assign(lb.storage_ids().begin(), lb.storage_ids().end());
  replacements_++;
  GlobalClientCounters().pipeline_replacements.fetch_add(1, std::memory_order_relaxed);
  return Status::OK();
}

Status FileWriter::Recover() {
  constexpr int kMaxAttempts = 6;
  int bad = pipeline_->bad_node();
  Status why = pipeline_->status();
  std::deque<PipelinePacket> unacked = pipeline_->TakeUnacked();
  uint64_t acked = pipeline_->acked_bytes();
  pipeline_.reset();
  for (int attempt = 0; attempt < kMaxAttempts; attempt++) {
    if (bad < 0 || size_t(bad) >= nodes_.size()) bad = 0;
    spdlog::warn("hdfs: {}: recovering the pipeline of block {} without DataNode {} ({})", path_,
                 block_.b().block_id(), DatanodeName(nodes_[size_t(bad)]), why.ToString());
    excluded_.push_back(nodes_[size_t(bad)]);
    nodes_.erase(nodes_.begin() + bad);
    if (size_t(bad) < storage_ids_.size()) storage_ids_.erase(storage_ids_.begin() + bad);
    if (nodes_.empty()) {
      return Status::IOError(fmt::format("{}: every DataNode of the write pipeline failed; last: {}",
                                         path_, why.ToString()));
    }
    if (client_->options().replace_datanode_on_failure && nodes_.size() < replication_) {
      // Best effort: without a replacement the write continues on fewer nodes.
      Status st = AddReplacement(acked);
      if (!st.ok()) {
        spdlog::warn("hdfs: {}: no replacement DataNode for block {}: {}", path_,
                     block_.b().block_id(), st.ToString());
      }
    }
    // A new generation stamp fences the replica on the DataNode we dropped.
    pb::UpdateBlockForPipelineRequest ureq;
    *ureq.mutable_block() = block_.b();
    ureq.set_client_name(client_->client_name());
    pb::UpdateBlockForPipelineResponse uresp;
    HBISS_RETURN_IF_ERROR(client_->NnCall("updateBlockForPipeline", ureq, &uresp));
    uint64_t new_gs = uresp.block().b().generation_stamp();

    PipelineSetup s;
    s.client_name = client_->client_name();
    s.block = block_.b();
    s.block.set_num_bytes(acked);
    s.token = uresp.block().block_token();
    s.targets = nodes_;
    s.storage_ids = storage_ids_;
    s.stage = pb::OpWriteBlock::PIPELINE_SETUP_STREAMING_RECOVERY;
    s.latest_gs = new_gs;
    s.min_bytes = acked;
    s.max_bytes = sent_bytes_;
    s.bytes_per_checksum = kBytesPerChecksum;
    s.timeout_ms = client_->options().datanode_timeout_ms;
    auto p = Pipeline::Open(s, &bad);
    if (!p.ok()) {
      why = p.status();
      if (bad < 0) {
        // This host could not start the pipeline (no thread): no DataNode is to blame, so
        // stop instead of dropping healthy ones.
        return why.WithContext(fmt::format("{}: recovering the write pipeline", path_));
      }
      continue;
    }
    pb::UpdatePipelineRequest preq;
    preq.set_client_name(client_->client_name());
    *preq.mutable_old_block() = block_.b();
    preq.mutable_old_block()->set_num_bytes(acked);
    *preq.mutable_new_block() = block_.b();
    preq.mutable_new_block()->set_generation_stamp(new_gs);
    preq.mutable_new_block()->set_num_bytes(acked);
    for (const auto& dn : nodes_) *preq.add_new_nodes() = dn.id();
    for (const auto& id : storage_ids_) preq.add_storage_ids(id);
    pb::UpdatePipelineResponse presp;
    HBISS_RETURN_IF_ERROR(client_->NnCall("updatePipeline", preq, &presp));
    block_.mutable_b()->set_generation_stamp(new_gs);
    *block_.mutable_block_token() = uresp.block().block_token();
    pipeline_ = std::move(p).value();
    recoveries_++;
    GlobalClientCounters().pipeline_recoveries.fetch_add(1, std::memory_order_relaxed);
    // Resend everything the old pipeline did not acknowledge, in order.
    bool resent = true;
    while (!unacked.empty()) {
      PipelinePacket pkt = std::move(unacked.front());
      unacked.pop_front();
      if (!pipeline_->Send(std::move(pkt)).ok()) {
        resent = false;
        break;
      }
    }
    if (resent) return Status::OK();
    // The new pipeline failed too: start over from what it acknowledged.
    bad = pipeline_->bad_node();
    why = pipeline_->status();
    std::deque<PipelinePacket> rest = std::move(unacked);
    unacked = pipeline_->TakeUnacked();
    for (auto& pkt : rest) unacked.push_back(std::move(pkt));
    acked = pipeline_->acked_bytes();
    pipeline_.reset();
  }
  return Status::IOError(fmt::format("{}: pipeline recovery failed {} times; last: {}", path_,
                                     kMaxAttempts, why.ToString()));
}

Status FileWriter::Close() {
  if (closed_) return Status::InvalidArgument(fmt::format("{}: closed twice", path_));
  closed_ = true;
  struct LeaseRelease {  // the lease must be renewed until complete() returns
    Client* c;
    ~LeaseRelease() { c->WriterClosed(); }
  } release{client_};
  if (!error_.ok()) {
    pipeline_.reset();
    return error_;
  }
  if (have_block_) {
    Status st = EndBlock();
    if (!st.ok()) {
      pipeline_.reset();
      return SetError(st);
    }
  }
  pb::CompleteRequest req;
  req.set_src(path_);
  req.set_client_name(client_->client_name());
  if (have_previous_) *req.mutable_last() = previous_;
  req.set_file_id(file_id_);
  auto deadline = Clock::now() + std::chrono::seconds(120);
  int sleep_ms = 100;
  for (;;) {
    pb::CompleteResponse resp;
    HBISS_RETURN_IF_ERROR(SetError(client_->NnCall("complete", req, &resp)));
    if (resp.result()) return Status::OK();
    if (Clock::now() > deadline) {
      return SetError(Status::IOError(
          fmt::format("{}: the NameNode did not complete the file within 120 s", path_), true));
    }
    SleepMs(sleep_ms);
    sleep_ms = std::min(sleep_ms * 2, 1000);
  }
}

}  // namespace hbiss::hdfs
