/* proc_cpu.h - CPU time and memory of processes, from /proc (benchmarks). */
#ifndef CHORUS_PROC_CPU_H
#define CHORUS_PROC_CPU_H

#include <stdbool.h>

/* Seconds of user+sys CPU of @p root and, with @p tree, of every
 * descendant alive now plus what each reaped; -1 when @p root is gone. */
double proc_cpu(int root, bool tree);
/* A "Vm...:" line of /proc/PID/status (VmRSS, VmHWM) in kB, or -1. */
long proc_vm_kb(int pid, const char *key);

#endif
