// run_server: the process around a Server. SIGTERM and SIGINT start a drain;
// a watchdog makes the process end within --drain-s even when a model call
// or a connection holds on past it.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "maskrcnn/cpu_settings.h"
#include "maskrcnn/error.h"
#include "serve/server.h"

namespace maskrcnn::serve {
namespace {

// The handler only writes a byte to a pipe (async-signal-safe); the main
// thread polls the pipe. No lock or allocation happens in the handler.
int g_signal_pipe[2] = {-1, -1};
volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_stop_signal(int sig) {
  g_signal = sig;
  const int saved = errno;
  const char byte = 1;
  if (g_signal_pipe[1] >= 0) {
    const ssize_t n = ::write(g_signal_pipe[1], &byte, 1);
    (void)n;
  }
  errno = saved;
}

class StopSignals {
 public:
  StopSignals() {
    if (::pipe(g_signal_pipe) != 0) throw Error("cannot create the signal pipe");
    for (int fd : g_signal_pipe) {
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    g_signal = 0;
    struct sigaction sa = {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
    for (int& fd : g_signal_pipe) {
      ::close(fd);
      fd = -1;
    }
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The signal that arrived within `timeout`, or 0.
  int wait_for(std::chrono::milliseconds timeout) {
    pollfd p{g_signal_pipe[0], POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(timeout.count()));  // EINTR: the signal, seen below
    return static_cast<int>(g_signal);
  }

 private:
  struct sigaction old_int_ = {}, old_term_ = {};
};

// Ends the process with `code` unless disarmed before `seconds` pass.
class Watchdog {
 public:
  Watchdog(double seconds, int code) {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(seconds));
    thread_ = std::thread([this, deadline, code] {
      std::unique_lock<std::mutex> lock(mutex_);
      if (cv_.wait_until(lock, deadline, [this] { return disarmed_; })) return;
      std::fprintf(stderr, "maskrcnn serve: the drain time is over; exiting with requests unanswered\n");
      std::fflush(stdout);
      std::fflush(stderr);
      std::_Exit(code);
    });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      disarmed_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool disarmed_ = false;
  std::thread thread_;  // last: uses the members above
};

}  // namespace

int run_server(const ServeOptions& options) {
  tune_allocator_for_inference();  // before any thread: one malloc arena for all (cpu_settings.h)
  StopSignals signals;
  std::string load_error;
  int sig = 0;
  std::optional<Watchdog> watchdog;  // declared first: it outlives ~Server's joins
  {
    Server server(options);
    server.start();
    std::printf("serving on %s\n", server.url().c_str());
    std::fflush(stdout);
    std::fprintf(stderr, "maskrcnn serve: loading %s; GET /readyz answers 200 once it is ready\n",
                 options.weights.c_str());
    while ((sig = signals.wait_for(std::chrono::milliseconds(200))) == 0) {
      load_error = server.load_error();
      if (!load_error.empty()) break;
    }
    if (sig != 0)
      std::fprintf(stderr, "maskrcnn serve: %s: draining (at most %g s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
                   options.drain_s);
    // The drain and the server's threads (a model still loading included)
    // get --drain-s in all.
    watchdog.emplace(options.drain_s, load_error.empty() ? 0 : 1);
    server.drain();
  }  // ~Server joins every thread
  watchdog.reset();
  if (!load_error.empty()) throw Error(load_error);
  std::fprintf(stderr, "maskrcnn serve: stopped\n");
  return 0;
}

}  // namespace maskrcnn::serve
