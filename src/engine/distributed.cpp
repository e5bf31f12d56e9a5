#include "engine/distributed.h"

#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/version.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#ifndef USE_C10D_GLOO
#error "Define USE_C10D_GLOO (CMake's Torch targets do; plain g++ needs -DUSE_C10D_GLOO)"
#endif

namespace maskrcnn::engine {
namespace {
// c10::Error::what() carries a C++ backtrace; keep the message only.
std::string message_of(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : std::string(fallback);
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  try {
    std::size_t used = 0;
    int x = std::stoi(v, &used);
    if (used == std::string(v).size()) return x;
  } catch (const std::exception&) {
  }
  throw DistError(std::string("environment variable ") + name + "='" + v + "' is not an integer");
}

void check_rank(int rank, int world) {
  if (rank < 0 || rank >= world)
    throw DistError("RANK must be set to 0.." + std::to_string(world - 1) + " when WORLD_SIZE=" + std::to_string(world));
}

// The local address the kernel routes to host:port from (a connected UDP
// socket sends nothing). Empty when it cannot be found.
std::string local_address_towards(const std::string& host, int port) {
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &dst.sin_addr) != 1) return {};
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return {};
  sockaddr_in local{};
  socklen_t len = sizeof(local);
  char buf[INET_ADDRSTRLEN] = {};
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
            inet_ntop(AF_INET, &local.sin_addr, buf, sizeof(buf)) != nullptr;
  ::close(fd);
  return ok ? std::string(buf) : std::string();
}

// Like torch.distributed: GLOO_SOCKET_IFNAME=eth0[,eth1] picks interfaces
// (that variable is read by the Python bindings, not by libtorch). Otherwise
// bind to the address that routes to the master (127.0.0.1 for a local run);
// createDefaultDevice() would use the hostname's address, which on Debian's
// default /etc/hosts is 127.0.1.1 and breaks multi-node runs.
std::vector<std::shared_ptr<gloo::transport::Device>> gloo_devices(const std::string& master, int port) {
  std::vector<std::shared_ptr<gloo::transport::Device>> devices;
  std::stringstream ifnames(env_or("GLOO_SOCKET_IFNAME", ""));
  for (std::string name; std::getline(ifnames, name, ',');)
    if (!name.empty()) devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
  if (!devices.empty()) return devices;
  std::string local = master == "localhost" ? "127.0.0.1" : local_address_towards(master, port);
  devices.push_back(local.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                  : c10d::ProcessGroupGloo::createDeviceForHostname(local));
  return devices;
}

// Consecutive tensors of one dtype, at most `cap` bytes (a bigger tensor gets
// a bucket of its own).
std::vector<std::vector<std::size_t>> make_buckets(const std::vector<at::Tensor>& ts, std::size_t cap) {
  std::vector<std::vector<std::size_t>> buckets;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    std::size_t b = ts[i].numel() * ts[i].element_size();
    if (buckets.empty() || bytes + b > cap ||
        ts[buckets.back().front()].scalar_type() != ts[i].scalar_type()) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(i);
    bytes += b;
  }
  return buckets;
}

void check_tensors(const std::vector<at::Tensor>& ts, const char* op, bool floating) {
  for (std::size_t i = 0; i < ts.size(); ++i) {
    if (!ts[i].defined())
      throw DistError(std::string(op) + ": tensor " + std::to_string(i) + " is undefined");
    if (!ts[i].device().is_cpu())
      throw DistError(std::string(op) + ": Gloo here takes CPU tensors (tensor " + std::to_string(i) + ")");
    if (floating && !at::isFloatingType(ts[i].scalar_type()))
      throw DistError(std::string(op) + ": tensor " + std::to_string(i) + " is not floating point");
  }
}

}  // namespace

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  if (fd >= 0) ::close(fd);
  if (port == 0) throw DistError("cannot find a free port on 127.0.0.1");
  return port;
}

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;  // 1.x: a ProcessGroup; 2.x: a c10d::Backend
  c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> options;
  int rank = 0, world = 1, local_rank = 0;
  std::size_t bucket_bytes = 25u << 20;
  bool broken = false;  // a collective failed: peers are out of step
  std::string broken_reason;

  // Waits for every Work; a failure becomes a DistError and marks the group broken.
  void wait_all(const char* op, std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
    for (std::size_t i = 0; i < works.size(); ++i) {
      try {
        works[i]->wait();
      } catch (const std::exception& e) {
        std::ostringstream msg;
        msg << "c10d/gloo " << op << " (part " << i + 1 << "/" << works.size() << ") failed on rank " << rank
            << " of " << world << ": " << message_of(e);
        broken = true;
        broken_reason = msg.str();
        throw DistError(broken_reason);
      }
    }
  }

  // Packs the tensors into flat buckets, queues one collective per bucket (all
  // before the first wait, so Gloo's worker threads run them concurrently),
  // waits and copies the results back.
  template <class Launch>
  void bucketed(const char* op, std::vector<at::Tensor>& ts, Launch launch) {
    at::NoGradGuard no_grad;
    auto buckets = make_buckets(ts, bucket_bytes);
    std::vector<at::Tensor> flats;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (const auto& b : buckets) {
      std::vector<at::Tensor> parts;
      for (auto i : b) parts.push_back(ts[i].reshape(-1));
      flats.push_back(at::cat(parts));
      std::vector<at::Tensor> one{flats.back()};
      works.push_back(launch(one));
    }
    wait_all(op, works);
    for (std::size_t k = 0; k < buckets.size(); ++k) {
      int64_t off = 0;
      for (auto i : buckets[k]) {
        ts[i].copy_(flats[k].narrow(0, off, ts[i].numel()).view(ts[i].sizes()));
        off += ts[i].numel();
      }
    }
  }

  void check_usable(const char* op) const {
    if (broken) throw DistError(std::string("c10d ") + op + " after an earlier failure: " + broken_reason);
  }
};

std::optional<ProcessGroup> ProcessGroup::from_env(std::chrono::milliseconds timeout) {
  Rendezvous r;
  r.world_size = env_int("WORLD_SIZE", 1);
  if (r.world_size <= 1) return std::nullopt;
  r.rank = env_int("RANK", -1);
  r.local_rank = env_int("LOCAL_RANK", 0);
  check_rank(r.rank, r.world_size);
  r.master_addr = env_or("MASTER_ADDR", "127.0.0.1");
  r.master_port = env_int("MASTER_PORT", 29500);
  // torchrun's static rendezvous has its agent host the store on MASTER_PORT:
  // then every rank is a client, under a per-restart prefix (as in
  // torch/distributed/rendezvous.py). Otherwise rank 0 hosts it.
  r.agent_store = env_or("TORCHELASTIC_USE_AGENT_STORE", "") == "True";
  r.restart_count = env_or("TORCHELASTIC_RESTART_COUNT", "0");
  return connect(r, timeout);
}

ProcessGroup ProcessGroup::connect(const Rendezvous& r, std::chrono::milliseconds timeout) {
  const int world = r.world_size;
  if (world < 2) throw DistError("a process group needs WORLD_SIZE >= 2");
  auto impl = std::make_unique<Impl>();
  impl->world = world;
  impl->rank = r.rank;
  impl->local_rank = r.local_rank;
  check_rank(r.rank, world);
  const std::string& master = r.master_addr;
  const int port = r.master_port;
  if (port <= 0 || port > 65535) throw DistError("MASTER_PORT out of range");

  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(port);
  so.isServer = !r.agent_store && impl->rank == 0;
  so.numWorkers = static_cast<std::size_t>(world);
  so.waitWorkers = false;  // the Gloo rendezvous below waits for everyone anyway (1x timeout, not 2x)
  so.timeout = timeout;
  try {
    impl->store = c10::make_intrusive<c10d::TCPStore>(master, so);
    if (r.agent_store)
      impl->store =
          c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + r.restart_count, impl->store);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices = gloo_devices(master, port);
    opts->threads = 2;
    impl->options = opts;
    impl->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("maskrcnn_gloo/", impl->store), impl->rank, world, opts);
  } catch (const std::exception& e) {
    throw DistError("c10d rendezvous at " + master + ":" + std::to_string(port) + " failed (rank " +
                    std::to_string(impl->rank) + " of " + std::to_string(world) + ", timeout " +
                    std::to_string(timeout.count()) + " ms; did every rank start?): " + message_of(e));
  }
  return ProcessGroup(std::move(impl));
}

ProcessGroup ProcessGroup::subgroup(const std::string& name) {
  impl_->check_usable("subgroup");
  auto impl = std::make_unique<Impl>();
  impl->store = impl_->store;
  impl->options = impl_->options;
  impl->rank = impl_->rank;
  impl->world = impl_->world;
  impl->local_rank = impl_->local_rank;
  try {
    impl->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("maskrcnn_gloo_" + name + "/", impl->store), impl->rank,
        impl->world, impl->options);
  } catch (const std::exception& e) {
    throw DistError("c10d subgroup '" + name + "' failed on rank " + std::to_string(impl->rank) + ": " +
                    message_of(e));
  }
  return ProcessGroup(std::move(impl));
}

ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProcessGroup::ProcessGroup(ProcessGroup&&) noexcept = default;
ProcessGroup& ProcessGroup::operator=(ProcessGroup&&) noexcept = default;
ProcessGroup::~ProcessGroup() = default;

int ProcessGroup::rank() const { return impl_->rank; }
int ProcessGroup::world_size() const { return impl_->world; }
int ProcessGroup::local_rank() const { return impl_->local_rank; }
std::size_t ProcessGroup::bucket_bytes() const { return impl_->bucket_bytes; }
void ProcessGroup::set_bucket_bytes(std::size_t bytes) { impl_->bucket_bytes = bytes ? bytes : 1; }

void ProcessGroup::broadcast(std::vector<at::Tensor>& tensors, int root) {
  impl_->check_usable("broadcast");
  check_tensors(tensors, "broadcast", false);
  if (root < 0 || root >= impl_->world) throw DistError("broadcast: root out of range");
  c10d::BroadcastOptions o;
  o.rootRank = root;
  impl_->bucketed(
      "broadcast", tensors, [&](std::vector<at::Tensor>& one) { return impl_->gloo->broadcast(one, o); });
}

void ProcessGroup::barrier() {
  impl_->check_usable("barrier");
  std::vector<c10::intrusive_ptr<c10d::Work>> works{impl_->gloo->barrier()};
  impl_->wait_all("barrier", works);
}

struct ProcessGroup::Pending::State {
  c10::intrusive_ptr<c10d::Work> work;
  ProcessGroup::Impl* group = nullptr;
};

ProcessGroup::Pending::Pending() = default;
ProcessGroup::Pending::Pending(Pending&&) noexcept = default;
ProcessGroup::Pending& ProcessGroup::Pending::operator=(Pending&&) noexcept = default;
ProcessGroup::Pending::~Pending() = default;
bool ProcessGroup::Pending::valid() const { return state_ != nullptr; }

void ProcessGroup::Pending::wait() {
  if (!state_) throw DistError("wait on a collective that was never started");
  std::vector<c10::intrusive_ptr<c10d::Work>> works{state_->work};
  auto* group = state_->group;
  state_.reset();
  group->wait_all("allreduce", works);
}

ProcessGroup::Pending ProcessGroup::allreduce_sum_async(at::Tensor flat) {
  impl_->check_usable("allreduce");
  std::vector<at::Tensor> one{std::move(flat)};
  check_tensors(one, "allreduce_sum_async", true);
  Pending p;
  p.state_ = std::make_unique<Pending::State>();
  p.state_->group = impl_.get();
  p.state_->work = impl_->gloo->allreduce(one);  // ReduceOp::SUM
  return p;
}

void ProcessGroup::allreduce_sum(at::Tensor& t) {
  impl_->check_usable("allreduce");
  std::vector<at::Tensor> one{t.contiguous()};
  check_tensors(one, "allreduce_sum", true);
  std::vector<c10::intrusive_ptr<c10d::Work>> works{impl_->gloo->allreduce(one)};
  impl_->wait_all("allreduce_sum", works);
  if (!one[0].is_same(t)) t.copy_(one[0]);
}

double ProcessGroup::allreduce_scalar(double value) {
  impl_->check_usable("allreduce");
  std::vector<at::Tensor> one{at::full({1}, value, at::kDouble)};
  std::vector<c10::intrusive_ptr<c10d::Work>> works{impl_->gloo->allreduce(one)};
  impl_->wait_all("allreduce_scalar", works);
  return one[0].item<double>();
}

}  // namespace maskrcnn::engine
