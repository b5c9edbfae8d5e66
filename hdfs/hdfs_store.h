// The hdfs:// backend of the segment store (store/store.h) over hbiss's native client.
//
//   hdfs://host:port/dir   objects are HDFS files under /dir, named by their store names.
//
// Mapping of the store contract:
//  * Segments are HDFS files. SegmentWriter::Flush is hflush, Sync is hsync (plus the
//    NameNode length update), Close ends the last block and completes the file.
//  * Segments and Put's files are created with CreateOptions::sync_block: a block that fills
//    up is fsynced on its DataNodes when it ends, so an hsync (which syncs only the block
//    being written) makes the whole file durable, not just its last block.
//  * Put writes a temporary file ".hbiss-tmp-..." next to the target, hsyncs and closes it,
//    then rename2(overwrite) replaces the target atomically.
//  * Open never touches a lease: a file still open for writing, by this process or any
//    other, is read up to its visible length (the last block's length as a DataNode of its
//    pipeline reports it, which covers every hflushed byte), and its writer carries on.
//    HDFS cannot tell a crashed writer from a live one, so a reader must not guess.
//  * OpenForTakeover, unless a writer of this process has the file open, calls recoverLease
//    and waits until the NameNode has closed the file (the HBase WAL pattern), then reads up
//    to the recovered length. That fences the old writer (its next hflush fails), which is
//    why only the holder of the volume's lock may call it.
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
