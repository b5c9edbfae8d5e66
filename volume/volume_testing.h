// Test hooks into the engine (VolumeImpl), for tests only: not part of the
// public API (volume.h). Each is process-wide and thread-safe to set; set
// and clear them while no volume is open, or accept that a volume already
// open may or may not see the change.
#pragma once

#include <functional>

namespace hbiss::volume::testing {

// Runs `hook` in a volume's flusher thread each time it encodes a
// checkpoint or a snapshot's map object, right before the encode (so a hook that blocks stands for an
// encode that takes that long). The flusher holds no volume lock there,
// unless it could not take a snapshot of the map and encodes in place.
// An empty function removes the hook.
void SetCheckpointEncodeHook(std::function<void()> hook);

// Runs `hook` in the thread creating a snapshot (Volume::CreateSnapshot),
// right after it took the snapshot's map and before it flushes; it holds no
// volume lock there but the one that serialises snapshot operations (so a
// hook that blocks stands for a creation that pauses there). An empty
// function removes the hook.
void SetSnapshotMapTakenHook(std::function<void()> hook);

}  // namespace hbiss::volume::testing
