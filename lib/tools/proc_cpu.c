/*
 * proc_cpu.c - what a benchmark reads of other processes in /proc: their
 * CPU time (with their descendants, for servers that fork) and memory.
 */
#include "proc_cpu.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* utime+stime (and, when @p reaped, cutime+cstime) of @p pid, and its
 * parent; false when it is gone. */
static bool proc_times(int pid, bool reaped, double *secs, int *ppid) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *p = strrchr(buf, ')'); /* the command may hold spaces and parentheses */
    if (!p)
        return false;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime stime cutime cstime */
    int pp;
    unsigned long long ut, st;
    long long cut, cst;
    if (sscanf(p + 1, " %*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld", &pp,
               &ut, &st, &cut, &cst) != 5)
        return false;
    *secs = ((double)(ut + st) + (reaped ? (double)(cut + cst) : 0)) / (double)sysconf(_SC_CLK_TCK);
    if (ppid)
        *ppid = pp;
    return true;
}

/* The CPU of @p root and, with @p tree, of every descendant alive now plus
 * what each reaped; -1 when the root is gone. */
double proc_cpu(int root, bool tree) {
    double secs;
    if (!proc_times(root, tree, &secs, NULL))
        return -1;
    if (!tree)
        return secs;
    static int pids[65536], ppids[65536];
    static double times[65536];
    static bool in[65536];
    int n = 0;
    DIR *d = opendir("/proc");
    for (struct dirent *e; d && (e = readdir(d)) && n < 65536;)
        if (isdigit((unsigned char)e->d_name[0]) &&
            proc_times(atoi(e->d_name), true, &times[n], &ppids[n]))
            pids[n++] = atoi(e->d_name);
    if (d)
        closedir(d);
    for (int i = 0; i < n; i++)
        in[i] = false;
    for (bool grew = true; grew;) { /* descendants: a fixed point */
        grew = false;
        for (int i = 0; i < n; i++) {
            if (in[i] || pids[i] == root)
                continue;
            bool parent_in = ppids[i] == root;
            for (int k = 0; !parent_in && k < n; k++)
                parent_in = in[k] && pids[k] == ppids[i];
            if (parent_in)
                in[i] = grew = true;
        }
    }
    for (int i = 0; i < n; i++)
        if (in[i])
            secs += times[i];
    return secs;
}

/* A "Vm...:" line of /proc/PID/status in kB, or -1. */
long proc_vm_kb(int pid, const char *key) {
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    size_t klen = strlen(key);
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            kb = strtol(line + klen + 1, NULL, 10);
            break;
        }
    if (f)
        fclose(f);
    return kb;
}

bool proc_watch_parse(const char *arg, char *name, size_t name_size, int *pid, bool *tree) {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || (size_t)(eq - arg) >= name_size)
        return false;
    char *end;
    long p = strtol(eq + 1, &end, 10);
    *tree = *end == '+';
    if (end == eq + 1 || p < 1 || p > (1L << 30) || end[*tree] != '\0')
        return false;
    snprintf(name, name_size, "%.*s", (int)(eq - arg), arg);
    *pid = (int)p;
    return true;
}
