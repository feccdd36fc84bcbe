// CKernels: the calling thread's scheduling priority (declared in CKernels.h), for background
// threads that must not take a core from the step (the checkpoint writer). C because Swift's
// Glibc module exposes neither gettid() nor the variadic syscall().
#define _GNU_SOURCE
#include "CKernels.h"
#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

int lockstep_set_thread_nice(int nice) {
#if defined(__linux__)
    // On Linux a nice value belongs to a thread, named by its kernel thread id.
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
#else
    (void)nice;
    return -1;
#endif
}
