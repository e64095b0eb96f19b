/* proc_cpu.h - CPU time and memory of processes, from /proc (benchmarks). */
#ifndef CHORUS_PROC_CPU_H
#define CHORUS_PROC_CPU_H

#include <stdbool.h>
#include <stddef.h>

/* Seconds of user+sys CPU of @p root and, with @p tree, of every
 * descendant alive now plus what each reaped; -1 when @p root is gone. */
double proc_cpu(int root, bool tree);
/* "NAME=PID" or "NAME=PID+" (with its descendants), as the benchmarks'
 * --cpu takes it; false when malformed or NAME does not fit @p name_size. */
bool proc_watch_parse(const char *arg, char *name, size_t name_size, int *pid, bool *tree);
/* A "Vm...:" line of /proc/PID/status (VmRSS, VmHWM) in kB, or -1. */
long proc_vm_kb(int pid, const char *key);

#endif
