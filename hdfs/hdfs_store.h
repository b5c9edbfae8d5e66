// The hdfs:// backend of the segment store (store/store.h) over hbiss's native client.
//
//   hdfs://host:port/dir   objects are HDFS files under /dir, named by their store names.
//
// Mapping of the store contract:
//  * Segments are HDFS files. SegmentWriter::Flush is hflush, Sync is hsync (plus the
//    NameNode length update), Close ends the last block and completes the file.
//  * Put writes a temporary file ".hbiss-tmp-..." next to the target, hsyncs and closes it,
//    then rename2(overwrite) replaces the target atomically.
//  * Open of a file still open for writing, when no writer of this process has it open,
//    treats the writer as crashed: it calls recoverLease and waits until the NameNode has
//    closed the file (the HBase WAL pattern), then reads up to the recovered length. A file
//    still being written by this process is read up to its hflushed length instead.
//    Caution: HDFS cannot tell a crashed writer from a live one in another process, so an
//    Open there fences that writer (its next hflush fails). Callers that may read a segment
//    another process is still writing must hold that volume's TryLock first.
//  * TryLock holds an empty lock file open through our lease (Client::TryLockFile): create,
//    or append to a closed one; another holder's lease -> Busy. Released by completing the
//    file; a crashed holder's lock frees itself when its lease expires (soft limit, 60 s).
//    (create with overwrite would not do: HDFS deletes the file whatever its lease.)
//  * Names starting with ".hbiss-" never appear in List.
//
// Thread safety: as store::Store.
#pragma once

#include <memory>
#include <string>

#include "hdfs/client.h"
#include "store/store.h"

namespace hbiss::hdfs {

// Opens the store at an hdfs:// URI (store::StoreFactory). NotFound when the directory is
// missing and !create_if_missing; InvalidArgument for a malformed URI or a path that is a
// file.
Result<std::unique_ptr<store::Store>> OpenHdfsStore(const std::string& uri,
                                                    bool create_if_missing);

// Same, with explicit client options (tests use short timeouts).
Result<std::unique_ptr<store::Store>> OpenHdfsStore(const std::string& uri,
                                                    bool create_if_missing,
                                                    const ClientOptions& options);

// Registers "hdfs" with store::OpenStore. Call once from main() before OpenStore.
void RegisterStoreScheme();

}  // namespace hbiss::hdfs
