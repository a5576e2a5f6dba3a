// The wide DAG's floor with the engine's work per job split across two lanes: N no-op jobs (`/bin/true`, a pipe
// each for stdout and stderr, clone(CLONE_VM) + a pidfd in epoll, as Slipway starts steps) run by two threads,
// each starting its own next job when its step ends, after WORK_US µs of busy work standing for the engine's
// bookkeeping. The one-thread shape Slipway had before its lanes (one thread starting both cores' steps) was
// measured the same way in bench/RESULTS.md, 2026-11-24: 120 µs of work a job gave 365 ms there, two lanes
// ~290-300 ms here (make -j2: ~280-300 ms).
//
//   cc -O2 -pthread -o lanes_floor bench/lanes_floor.c
//   ./lanes_floor N WORK_US PIN RESET     PIN=1 pins lane k to CPU k; RESET=1 gives each child the process's
//                                         CPUs back before its exec
//
// Prints the wall time in milliseconds.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
static int total, work_us, reset_affinity, pin;
static cpu_set_t all;
struct cargs { int out, err; };
static int child_main(void *raw) {
    struct cargs *a = raw;
    if (reset_affinity) sched_setaffinity(0, sizeof all, &all);
    dup2(a->out, 1); dup2(a->err, 2); setpgid(0, 0);
    char *argv[] = {"/bin/true", NULL};
    execve("/bin/true", argv, environ); _exit(127);
}
static double now_us(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
static void burn(int us) { double end = now_us() + us; while (now_us() < end) {} }
static void *lane(void *p) {
    long id = (long)p;
    if (pin) { cpu_set_t one; CPU_ZERO(&one); CPU_SET((int)id, &one); pthread_setaffinity_np(pthread_self(), sizeof one, &one); }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    char *stack = malloc(65536);
    for (int i = 0; i < total; i++) {
        int out[2], err[2]; pipe2(out, O_CLOEXEC); pipe2(err, O_CLOEXEC);
        struct cargs a = {out[1], err[1]}; int pidfd = -1;
        pid_t pid = clone(child_main, stack + 65536, CLONE_VM | CLONE_PIDFD | SIGCHLD, &a, &pidfd);
        close(out[1]); close(err[1]);
        struct epoll_event ev = {.events = EPOLLIN}; epoll_ctl(ep, EPOLL_CTL_ADD, pidfd, &ev);
        struct epoll_event got; epoll_wait(ep, &got, 1, -1);
        epoll_ctl(ep, EPOLL_CTL_DEL, pidfd, NULL);
        siginfo_t info; waitid(P_PIDFD, pidfd, &info, WEXITED); close(pidfd); close(out[0]); close(err[0]);
        (void)pid;
        burn(work_us);
    }
    return NULL;
}
int main(int argc, char **argv) {
    total = atoi(argv[1]) / 2; work_us = atoi(argv[2]); pin = atoi(argv[3]); reset_affinity = atoi(argv[4]);
    sched_getaffinity(0, sizeof all, &all);
    double s = now_us();
    pthread_t t[2];
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, lane, (void *)i);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("%.1f ms\n", (now_us() - s) / 1000);
}
