// Multi-process data parallelism on PyTorch's own c10d engine (Gloo backend).
// Launched like `torchrun --no-python`: RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT (and TORCHELASTIC_USE_AGENT_STORE when torchrun's
// agent already hosts the store). The c10d/Gloo headers stay in dist.cpp.
//
// Every collective must be called by all ranks in the same order with tensors
// of the same shapes and dtypes. Any failure (peer died, timeout, mismatch)
// throws DistError; the group is then unusable and every later call throws.
#pragma once
#include <ATen/core/Tensor.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace maskrcnn::engine {

class DistError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Where and as whom a process joins the group (what from_env reads from the
// torchrun variables).
struct Rendezvous {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE=True);
  // keys then live under its per-restart prefix.
  bool agent_store = false;
  std::string restart_count = "0";
};

// A TCP port on 127.0.0.1 that is free right now (bound, read, released),
// for a rendezvous on this machine. Throws DistError when none can be had.
int free_loopback_port();

class ProcessGroup {
 public:
  // nullopt when WORLD_SIZE is unset or 1 (single process: no communication).
  // Throws DistError on a malformed environment or when the rendezvous does
  // not complete within `timeout`. `timeout` is also the per-collective limit.
  static std::optional<ProcessGroup> from_env(std::chrono::milliseconds timeout);
  // Joins the group `r` describes (world_size >= 2); blocks until every rank
  // has joined. Throws DistError on bad values or a failed rendezvous.
  static ProcessGroup connect(const Rendezvous& r, std::chrono::milliseconds timeout);

  ProcessGroup(ProcessGroup&&) noexcept;
  ProcessGroup& operator=(ProcessGroup&&) noexcept;
  ~ProcessGroup();

  // A second group of the same processes (torch.distributed.new_group): its
  // collectives never interleave with this group's. Every rank calls it, in
  // the same order, with the same name.
  ProcessGroup subgroup(const std::string& name);

  int rank() const;
  int world_size() const;
  int local_rank() const;

  // In place: every tensor takes root's values. Tensors are packed into flat
  // buckets of at most bucket_bytes() (one dtype per bucket), all broadcast
  // concurrently, then copied back. (Gradients: GradientAverager below.)
  void broadcast(std::vector<at::Tensor>& tensors, int root);
  void barrier();
  // Sum over ranks (divide by world_size() for the mean).
  double allreduce_scalar(double value);
  // In place: t becomes its sum over ranks (a floating CPU tensor).
  void allreduce_sum(at::Tensor& t);

  std::size_t bucket_bytes() const;
  void set_bucket_bytes(std::size_t bytes);

  // One collective in flight; wait() blocks until it is done (DistError on failure).
  class Pending {
   public:
    Pending();
    Pending(Pending&&) noexcept;
    Pending& operator=(Pending&&) noexcept;
    ~Pending();
    void wait();
    bool valid() const;

   private:
    friend class ProcessGroup;
    struct State;
    std::unique_ptr<State> state_;
  };
  // Starts summing `flat` (one contiguous floating tensor) over ranks in place.
  Pending allreduce_sum_async(at::Tensor flat);

 private:
  struct Impl;
  explicit ProcessGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Averages the gradients of `params` over all ranks while backward still runs,
// as DDP's Reducer does: parameters are grouped into buckets in reverse order
// (backward produces the heads' gradients first), a hook on each parameter
// copies its gradient into its bucket's flat buffer, and a full bucket starts
// its allreduce at once. Buckets start strictly in bucket order, so every rank
// issues the same collectives in the same order even when gradients arrive in
// another order; parameters that got no gradient (unused this iteration) count
// as zeros and their buckets start in finish(). Not copyable; hooks are removed
// on destruction.
class GradientAverager {
 public:
  GradientAverager(ProcessGroup& group, std::vector<at::Tensor> params,
                   std::size_t bucket_bytes = 25u << 20, std::size_t first_bucket_bytes = 1u << 20);
  ~GradientAverager();
  GradientAverager(const GradientAverager&) = delete;
  GradientAverager& operator=(const GradientAverager&) = delete;

  void prepare();  // before backward
  void finish();   // after backward: every parameter's .grad() holds the mean over ranks
  std::size_t num_buckets() const;
  // Buckets started by hooks during the last backward (the overlapped ones).
  std::size_t buckets_started_early() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::vector<std::pair<at::Tensor, unsigned>> hooks_;
};

}  // namespace maskrcnn::engine
