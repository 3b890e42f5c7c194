#include "qs/ckpt/io/bus_error_guard.h"

#include <csetjmp>
#include <csignal>
#include <mutex>

namespace qs {
namespace {

// The innermost guard of this thread. Initial-exec TLS (no lazy allocation) is safe to read
// in a signal handler.
__attribute__((tls_model("initial-exec"))) thread_local sigjmp_buf* active_guard = nullptr;
struct sigaction previous_action {};

void on_bus_error(int signal, siginfo_t* info, void* context) {
  if (sigjmp_buf* guard = active_guard) siglongjmp(*guard, 1);
  // Not a guarded access: behave as if we had never been installed.
  if (previous_action.sa_flags & SA_SIGINFO) {
    previous_action.sa_sigaction(signal, info, context);
  } else if (previous_action.sa_handler != SIG_DFL && previous_action.sa_handler != SIG_IGN) {
    previous_action.sa_handler(signal);
  } else {
    // Returning re-runs the faulting access, which now gets the default action (ignoring a
    // synchronous SIGBUS is not possible either).
    struct sigaction fallback {};
    fallback.sa_handler = SIG_DFL;
    sigemptyset(&fallback.sa_mask);
    ::sigaction(SIGBUS, &fallback, nullptr);
  }
}

void install_handler_once() {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction action {};
    action.sa_sigaction = on_bus_error;
    // SA_NODEFER: SIGBUS stays unblocked in the handler, so leaving it by siglongjmp needs no
    // saved signal mask (sigsetjmp(…, 0) costs no system call per guarded block).
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, &previous_action);
  });
}

}  // namespace

bool call_catching_bus_error(void (*function)(void*), void* context) {
  install_handler_once();
  sigjmp_buf guard;
  sigjmp_buf* const outer = active_guard;
  if (sigsetjmp(guard, 0) != 0) {
    active_guard = outer;
    return false;
  }
  active_guard = &guard;
  function(context);
  active_guard = outer;
  return true;
}

}  // namespace qs
