#pragma once

#include <sys/types.h>

#include <string_view>

// Another process's counters, read from /proc: what the tests and bench/loadgen measure.

// A number from /proc/PID/status, e.g. "VmRSS:" or "Threads:"; -1 if there is none.
long proc_status_field(pid_t pid, std::string_view name);
// User plus system CPU time so far, in seconds.
double proc_cpu_seconds(pid_t pid);
// Voluntary plus involuntary context switches so far, summed over every thread.
long proc_context_switches(pid_t pid);
