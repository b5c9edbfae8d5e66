#include "cluster/flatten_jobs.h"

#include <spdlog/spdlog.h>

#include <random>
#include <utility>

#include "util/thread.h"

namespace hbiss::cluster {

FlattenJobs::FlattenJobs() {
  // Job ids differ between runs of a server, so that a command polling a
  // restarted server is told UNKNOWN, never another run's job.
  std::random_device rd;
  MutexLock l(&mu_);
  next_id_ = (uint64_t(rd()) << 32 | rd()) | 1;
}

FlattenJobs::~FlattenJobs() {
  std::vector<std::thread> threads;
  {
    MutexLock l(&mu_);
    for (auto& [name, job] : jobs_) {
      if (job.thread.joinable()) threads.push_back(std::move(job.thread));
    }
  }
  for (auto& t : threads) t.join();
}

std::vector<std::thread> FlattenJobs::PruneLocked() {
  std::vector<std::thread> out;
  const auto now = std::chrono::steady_clock::now();
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    if (it->second.state.state() != pb::FlattenJob::RUNNING &&
        now - it->second.finished > kKeepFinished) {
      if (it->second.thread.joinable()) out.push_back(std::move(it->second.thread));
      it = jobs_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

Result<pb::FlattenJob> FlattenJobs::Start(const std::string& name, volume::Volume* v,
                                          std::function<void()> release) {
  std::vector<std::thread> done;
  pb::FlattenJob out;
  bool started = false;
  Status failed;
  {
    MutexLock l(&mu_);
    done = PruneLocked();
    Job& job = jobs_[name];
    if (job.state.state() == pb::FlattenJob::RUNNING) {
      out = job.state;  // attach to it
    } else {
      if (job.thread.joinable()) done.push_back(std::move(job.thread));
      const uint64_t id = next_id_++;
      auto t = StartThread("flatten " + name, [this, name, id, v, release] {
        Run(name, id, v);
        release();
      });
      if (t.ok()) {
        job.state.Clear();
        job.state.set_job(id);
        job.state.set_state(pb::FlattenJob::RUNNING);
        job.thread = std::move(*t);
        out = job.state;
        started = true;
      } else {
        failed = t.status();
        if (!job.state.has_job()) jobs_.erase(name);
      }
    }
  }
  for (auto& t : done) t.join();
  if (!started) release();
  if (!failed.ok()) return failed.WithContext("volume " + name + ": flatten");
  return out;
}

void FlattenJobs::Run(const std::string& name, uint64_t id, volume::Volume* v) {
  spdlog::info("volume {}: flatten job {} begins", name, id);
  auto copied = v->Flatten([&](uint64_t done, uint64_t total) {
    MutexLock l(&mu_);
    auto it = jobs_.find(name);
    if (it != jobs_.end() && it->second.state.job() == id) {
      it->second.state.set_done_bytes(done * volume::kBlockSize);
      it->second.state.set_total_bytes(total * volume::kBlockSize);
    }
    return true;  // a command that went away does not stop it
  });
  MutexLock l(&mu_);
  auto it = jobs_.find(name);
  if (it == jobs_.end() || it->second.state.job() != id) return;
  pb::FlattenJob& s = it->second.state;
  it->second.finished = std::chrono::steady_clock::now();
  if (copied.ok()) {
    s.set_state(pb::FlattenJob::DONE);
    s.set_copied_blocks(*copied);
    s.set_done_bytes(s.total_bytes());
    spdlog::info("volume {}: flatten job {} done, {} blocks copied", name, id, *copied);
  } else {
    s.set_state(pb::FlattenJob::FAILED);
    s.set_status_code(uint32_t(copied.status().code()));
    s.set_message(copied.status().message());
    spdlog::warn("volume {}: flatten job {} failed: {}", name, id, copied.status().ToString());
  }
}

pb::FlattenJob FlattenJobs::Get(const std::string& name, uint64_t job) {
  std::vector<std::thread> done;
  pb::FlattenJob out;
  {
    MutexLock l(&mu_);
    done = PruneLocked();
    auto it = jobs_.find(name);
    if (it != jobs_.end() && it->second.state.job() == job) {
      out = it->second.state;
    } else {
      out.set_job(job);
      out.set_state(pb::FlattenJob::UNKNOWN);
    }
  }
  for (auto& t : done) t.join();
  return out;
}

}  // namespace hbiss::cluster
