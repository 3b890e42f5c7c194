#pragma once
// Reading a memory-mapped file past its current end raises SIGBUS, which kills the process:
// that happens when another process truncates a file while we scan it. This guard turns such
// a SIGBUS into a return value for the thread that caused it.
//
// The handler is process state by nature: it is installed once, on first use, and passes
// SIGBUS signals that no guard on the faulting thread expects to whatever handler was there
// before (by default: the process dies, as without the guard).

namespace qs {

// Runs function(context) and returns true, or returns false as soon as it raises SIGBUS. The
// function is left by siglongjmp, so it must hold no object with a destructor across the
// memory accesses that may fault (plain loops over bytes, C hashing functions).
bool call_catching_bus_error(void (*function)(void*), void* context);

}  // namespace qs
