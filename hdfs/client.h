// hbiss's native HDFS client: NameNode operations over Hadoop IPC (hdfs/rpc.h) and file data
// over DataTransferProtocol (hdfs/datatransfer.h). No JVM, no libhdfs.
//
//   auto c = Client::Connect("127.0.0.1", 8020, {});
//   auto w = (*c)->Create("/dir/file", {});  ... w->Write(...); w->Hflush(); w->Close();
//   auto r = (*c)->Open("/dir/file");         ... r->PRead(offset, buf);
//
// Paths are absolute HDFS paths ("/a/b"). Errors are Status values: NotFound for a missing
// path, AlreadyExists, Busy for a file whose lease someone else holds, IOError (retryable
// when a retry may succeed), Corruption for data failing its checksum on every replica.
//
// Thread safety: a Client and a FileReader may be used from many threads at once. A
// FileWriter is used by one thread at a time. A Client must outlive its readers and writers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "hdfs/datatransfer.h"
#include "hdfs/proto/hadoop_wire.pb.h"
#include "hdfs/rpc.h"
#include "util/mutex.h"
#include "util/status.h"
#include "util/thread_annotations.h"

namespace hbiss::hdfs {

// hdfs://host[:port][/path]. The port defaults to 8020 and the path to "/".
struct HdfsUri {
  std::string host;
  uint16_t port = 8020;
  std::string path;  // absolute, no trailing '/' except for "/"
};
Result<HdfsUri> ParseHdfsUri(std::string_view uri);

struct ClientOptions {
  std::string user;         // empty: $HADOOP_USER_NAME, else the login name
  std::string client_name;  // empty: "hbiss_<random>"; names our leases
  int rpc_retry_deadline_ms = 120000;
  int datanode_timeout_ms = 60000;
  // How often the renewer renews this client's lease while it has files open: often
  // enough that one or two failed renewals keep a healthy client far from
  // lease_self_fence_ms.
  int lease_renew_interval_ms = 10000;
  // A FileLock's Check fails once neither its acquisition nor a renewal of this client's
  // lease succeeded for this long (store::kLeaseSelfFenceSeconds: two thirds of the
  // NameNode's 60 s soft limit, after which another client may take the lease).
  int lease_self_fence_ms = 40000;
  // Ask the NameNode for a replacement when a DataNode of a write pipeline fails (and the
  // cluster has one); without one the write continues on the remaining nodes.
  bool replace_datanode_on_failure = true;
  // Data bytes per write packet, rounded down to whole 512-byte chunks (at least one). Java
  // sends 126 chunks (64 KiB packets); DataNodes accept up to 16 MiB.
  uint32_t write_packet_bytes = 126 * 512;
};

// FileLock::Check's rule, on its own: OK while `since_renewal` (the time since the last
// lease renewal that succeeded) is at most `limit`, else IOError saying how long it was.
Status CheckLeaseAge(std::chrono::steady_clock::duration since_renewal,
                     std::chrono::milliseconds limit);

struct FileStatus {
  std::string name;  // last path component ("" for the root)
  bool is_dir = false;
  uint64_t length = 0;
  uint64_t modification_time_ms = 0;
  uint32_t replication = 0;
  uint64_t block_size = 0;
  uint64_t file_id = 0;
  uint32_t permission = 0;
  std::string owner;
  std::string group;
};

struct CreateOptions {
  bool overwrite = false;
  bool create_parent = true;
  uint32_t replication = 0;  // 0: the server's default
  uint64_t block_size = 0;   // 0: the server's default
  uint32_t permission = 0644;
  // Java's CreateFlag.SYNC_BLOCK: the last packet of every block carries syncBlock, so each
  // DataNode fsyncs the replica (and its directory entry) before it finalizes the block and
  // acknowledges. Without it a DataNode finalizes a finished block from its page cache
  // (unless it runs with dfs.datanode.synconclose), and a later Hsync, which syncs only the
  // block being written, leaves the earlier blocks unsynced.
  bool sync_block = false;
};

class Client;

// Reads a file at random offsets. The length is fixed when the file is opened; for a file
// still being written it includes every byte the writer has hflushed.
class FileReader {
 public:
  FileReader(const FileReader&) = delete;
  FileReader& operator=(const FileReader&) = delete;

  // Reads up to out.size() bytes at offset; fewer only at the end of the file, 0 at or past
  // it. Every byte returned was verified against its chunk checksum. A dead DataNode or a
  // checksum failure moves the read to another replica; the call fails only when no replica
  // can serve the bytes (Corruption when every reachable replica failed its checksum).
  Result<size_t> PRead(uint64_t offset, std::span<uint8_t> out);

  uint64_t length() const { return length_; }
  const std::string& path() const { return path_; }
  // True when the file was still open for writing when this reader opened it.
  bool under_construction() const { return under_construction_; }
  // Replicas skipped because they failed, and replicas reported corrupt to the NameNode.
  uint64_t failovers() const { return failovers_.load(); }
  uint64_t reported_bad() const { return reported_bad_.load(); }
  // The located blocks as last fetched (for tests and tools).
  std::vector<pb::LocatedBlock> blocks() const EXCLUDES(mu_) {
    MutexLock l(&mu_);
    return blocks_;
  }

 private:
  friend class Client;
  FileReader(Client* client, std::string path) : client_(client), path_(std::move(path)) {}
  Status Refresh() EXCLUDES(mu_);  // refetches block locations
  // Tells the NameNode that dn's replica of lb's block failed its checksum, so that it
  // re-replicates the block from a good copy (best effort, as the Java client does).
  void ReportBadReplica(const pb::LocatedBlock& lb, const pb::DatanodeInfo& dn);
  // Reads [off_in_block, +len) of one block, failing over between replicas. With `stream`,
  // asks the DataNode for the rest of the block and keeps the stream for the next
  // sequential read.
  Status ReadFromBlock(const pb::LocatedBlock& lb, uint64_t off_in_block, uint64_t len,
                       uint8_t* out, bool stream);
  // Continues the kept stream when it sits exactly at [off_in_block, +len) of lb's block.
  // Returns false when it does not apply or failed (the stream is then dropped).
  bool ReadFromStream(const pb::LocatedBlock& lb, uint64_t off_in_block, uint64_t len,
                      uint8_t* out) EXCLUDES(stream_mu_, mu_);
  bool ReadFromStreamLocked(const pb::LocatedBlock& lb, uint64_t off_in_block, uint64_t len,
                            uint8_t* out) REQUIRES(stream_mu_) EXCLUDES(mu_);

  Client* const client_;
  const std::string path_;
  uint64_t length_ = 0;
  bool under_construction_ = false;
  bool fetched_ GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> failovers_{0};
  std::atomic<uint64_t> reported_bad_{0};
  mutable Mutex mu_;
  std::vector<pb::LocatedBlock> blocks_ GUARDED_BY(mu_);  // with the last block's length
  std::set<std::string> dead_nodes_ GUARDED_BY(mu_);
  // Sequential reads continue one READ_BLOCK stream instead of opening one per call.
  Mutex stream_mu_ ACQUIRED_BEFORE(mu_);
  std::unique_ptr<BlockReader> stream_ GUARDED_BY(stream_mu_);
  std::string stream_dn_ GUARDED_BY(stream_mu_);
  pb::DatanodeInfo stream_dn_info_ GUARDED_BY(stream_mu_);
  std::atomic<uint64_t> last_end_{~0ull};  // file offset where the previous PRead ended
};

// Writes a new file front to back. Destroying a writer without Close() abandons it: the
// file stays open until its lease expires or someone calls RecoverLease; hflushed bytes
// survive.
class FileWriter {
 public:
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;
  ~FileWriter();

  // Appends data. Bytes may be buffered until a packet fills, Hflush, Hsync or Close. On
  // error the writer is broken and every later call fails.
  Status Write(std::span<const uint8_t> data);
  Status Write(std::string_view data) {
    return Write(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()),
                                          data.size()));
  }
  // Returns once every DataNode of the pipeline has acknowledged every byte written so far:
  // the bytes survive a crash of this process and new readers see them.
  Status Hflush();
  // Hflush, with each DataNode syncing the block being written to disk before it
  // acknowledges; the NameNode also records the length. The bytes of that block survive power
  // loss, and so do those of the earlier blocks when the file was created with sync_block
  // (without it they may still sit in the DataNodes' page caches).
  Status Hsync();
  // Flushes, ends the last block and completes the file. No call but the destructor may
  // follow. Retries complete() while the NameNode is still waiting for block reports.
  Status Close();

  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Pipeline recoveries performed, and DataNodes added to replace failed ones (for tests).
  int recoveries() const { return recoveries_; }
  int replacements() const { return replacements_; }
  // The DataNodes of the current block's pipeline, in order (empty between blocks).
  std::vector<pb::DatanodeInfo> pipeline_nodes() const {
    return have_block_ ? nodes_ : std::vector<pb::DatanodeInfo>{};
  }

 private:
  friend class Client;
  FileWriter(Client* client, std::string path, uint64_t file_id, uint64_t block_size,
             uint32_t replication, bool sync_block);
  Status StartBlock();
  Status SendPacket(bool last_in_block, bool sync);
  Status EndBlock();
  Status Flush(bool sync);
  Status Recover();  // rebuilds the pipeline after a failure and resends unacked packets
  // Asks the NameNode for one more DataNode and has a surviving node copy the partial block
  // to it (TRANSFER_BLOCK); on success the new node joins nodes_.
  Status AddReplacement(uint64_t acked);
  Status SetError(Status st);

  Client* const client_;
  const std::string path_;
  const uint64_t file_id_;
  const uint64_t block_size_;
  const uint32_t replication_;
  const bool sync_block_;  // CreateOptions::sync_block
  static constexpr uint32_t kBytesPerChecksum = 512;
  const uint32_t packet_data_;  // data bytes per full packet, a multiple of kBytesPerChecksum

  Status error_;
  bool closed_ = false;
  uint64_t size_ = 0;
  // The block being written.
  bool have_block_ = false;
  pb::LocatedBlock block_;
  std::vector<pb::DatanodeInfo> nodes_;
  std::vector<std::string> storage_ids_;
  std::vector<pb::DatanodeInfo> excluded_;
  std::unique_ptr<Pipeline> pipeline_;
  uint64_t sent_bytes_ = 0;       // block offset just past the last byte sent
  int64_t next_seqno_ = 0;
  bool new_block_since_fsync_ = false;
  // The packet being filled: data_ starts at block offset pkt_offset_ (chunk aligned).
  uint64_t pkt_offset_ = 0;
  std::string pkt_data_;
  // The last finished block, passed as "previous" to addBlock and complete.
  bool have_previous_ = false;
  pb::ExtendedBlock previous_;
  int recoveries_ = 0;
  int replacements_ = 0;
};

class Client {
 public:
  static Result<std::unique_ptr<Client>> Connect(const std::string& host, uint16_t port,
                                                 ClientOptions options = {});
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  // Stops the lease renewer. Writers still open are abandoned (see FileWriter).
  ~Client();

  // Status of a file or directory; NotFound if absent.
  Result<FileStatus> GetFileInfo(const std::string& path);
  // Entries of a directory (all pages), in the NameNode's (byte-wise sorted) order. NotFound
  // if absent; a file lists as itself.
  Result<std::vector<FileStatus>> List(const std::string& path);
  // Creates a directory and its parents; OK if it exists as a directory.
  Status Mkdirs(const std::string& path, uint32_t permission = 0755);
  // Deletes a file or (with recursive) a directory tree. Returns false if nothing existed.
  Result<bool> Delete(const std::string& path, bool recursive);
  // Renames src to dst; with overwrite, atomically replaces an existing dst file.
  Status Rename(const std::string& src, const std::string& dst, bool overwrite);
  // Starts lease recovery of a file left open; true when the file is closed already.
  Result<bool> RecoverLease(const std::string& path);
  // RecoverLease until the file is closed or timeout_ms passes (Busy then).
  Status RecoverLeaseAndWait(const std::string& path, int timeout_ms = 120000);

  Result<std::unique_ptr<FileReader>> Open(const std::string& path);
  Result<std::unique_ptr<FileWriter>> Create(const std::string& path, const CreateOptions& opts);

  Result<pb::FsServerDefaults> GetServerDefaults();

  // An exclusive hold on an (empty) lock file through this client's lease. Acquiring:
  // create(path) if it is absent, else append(path) to take over a closed one; both fail
  // while another client (or this one) holds the lease -> Busy. Releasing completes the file
  // again (leaving a closed, free lock file). When the holder dies, its lease expires after
  // the NameNode's soft limit (60 s) and the next attempt recovers it. Note that HDFS's
  // create(overwrite) deletes a file regardless of its lease, so it cannot serve as a lock.
  class FileLock {
   public:
    FileLock(const FileLock&) = delete;
    FileLock& operator=(const FileLock&) = delete;
    ~FileLock();  // releases (best effort)
    Status Release();
    // OK while the lease surely still holds the lock: its acquisition or a renewal of the
    // client's lease succeeded within options().lease_self_fence_ms (CheckLeaseAge). No
    // I/O; any thread.
    Status Check() const;

   private:
    friend class Client;
    FileLock(Client* c, std::string path, uint64_t file_id)
        : client_(c),
          path_(std::move(path)),
          file_id_(file_id),
          acquired_(std::chrono::steady_clock::now()) {}
    Client* client_;
    std::string path_;
    uint64_t file_id_;
    const std::chrono::steady_clock::time_point acquired_;
    bool released_ = false;
  };
  Result<std::unique_ptr<FileLock>> TryLockFile(const std::string& path);

  // When a renewLease of this client last succeeded (the epoch of the steady clock if
  // none did yet).
  std::chrono::steady_clock::time_point LastLeaseRenewal() const;

  const std::string& client_name() const { return options_.client_name; }
  const ClientOptions& options() const { return options_; }
  RpcClient& namenode() { return *nn_; }
  std::string Address() const { return nn_->Address(); }

 private:
  friend class FileReader;
  friend class FileWriter;
  Client(const std::string& host, uint16_t port, ClientOptions options);
  Status NnCall(const char* method, const google::protobuf::MessageLite& req,
                google::protobuf::MessageLite* resp);
  Result<uint64_t> VisibleLength(const pb::LocatedBlock& lb);
  void WriterOpened() EXCLUDES(lease_mu_);
  void WriterClosed() EXCLUDES(lease_mu_);
  void RenewerLoop() EXCLUDES(lease_mu_);

  ClientOptions options_;
  std::unique_ptr<RpcClient> nn_;
  Mutex defaults_mu_;
  bool have_defaults_ GUARDED_BY(defaults_mu_) = false;
  pb::FsServerDefaults defaults_ GUARDED_BY(defaults_mu_);

  Mutex lease_mu_;
  CondVar lease_cv_;  // signalled on stop_ and when a writer opens
  int open_writers_ GUARDED_BY(lease_mu_) = 0;
  bool stop_ GUARDED_BY(lease_mu_) = false;
  std::atomic<int64_t> last_renewal_ns_{0};  // steady clock; LastLeaseRenewal
  std::thread renewer_;  // started by Connect(), joined by ~Client
};

FileStatus ToFileStatus(const pb::HdfsFileStatus& s);

}  // namespace hbiss::hdfs
