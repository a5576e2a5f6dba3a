// What starting and reaping N no-op processes, two at a time, costs by itself with each way of doing it: the
// floor under any engine that runs a wide DAG's jobs as processes (bench/spawn_floor.sh runs it beside make).
//
//   cc -O2 -o spawn_floor bench/spawn_floor.c
//   ./spawn_floor N MODE     MODE: fork | vm | vm-pidfd | vm-pidfd-pipes
//
//   fork            fork + exec, output to /dev/null, waitpid (what make does)
//   vm              clone(CLONE_VM) + exec, output to /dev/null, waitpid
//   vm-pidfd        the same, each child's end seen through a pidfd in epoll
//   vm-pidfd-pipes  the same, with a pipe for stdout and one for stderr in epoll (what Slipway does)
//
// Prints the wall time in milliseconds. Exits non-zero when a child fails.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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

enum { STACK_SIZE = 64 * 1024, SLOTS = 2 };

struct child_args {
    int out, err;  // write ends, or -1 for /dev/null
};

static int child_main(void *raw) {
    struct child_args *args = raw;
    if (args->out >= 0) {
        dup2(args->out, 1);
        dup2(args->err, 2);
    } else {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
    }
    setpgid(0, 0);
    char *argv[] = {"/bin/true", NULL};
    execve("/bin/true", argv, environ);
    _exit(127);
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void watch(int epoll, int fd, uint64_t tag) {
    struct epoll_event event = {.events = EPOLLIN, .data.u64 = tag};
    if (epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) != 0) { perror("epoll_ctl"); exit(1); }
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s N fork|vm|vm-pidfd|vm-pidfd-pipes\n", argv[0]); return 2; }
    int total = atoi(argv[1]);
    const char *mode = argv[2];
    int use_vm = strncmp(mode, "vm", 2) == 0;
    int use_pidfd = strstr(mode, "pidfd") != NULL;
    int use_pipes = strstr(mode, "pipes") != NULL;
    if (!use_vm && strcmp(mode, "fork") != 0) { fprintf(stderr, "unknown mode %s\n", mode); return 2; }

    // Each running child's stack (a CLONE_VM child uses it until its exec) and how its end is seen.
    struct { pid_t pid; int pidfd; char *stack; } slots[SLOTS];
    for (int i = 0; i < SLOTS; i++) slots[i].pid = 0;
    int epoll = epoll_create1(EPOLL_CLOEXEC);
    int running = 0, started = 0, done = 0, failed = 0;
    double start = now_ms();
    while (done < total) {
        while (running < SLOTS && started < total) {
            struct child_args args = {-1, -1};
            int out[2] = {-1, -1}, err[2] = {-1, -1};
            if (use_pipes) {
                if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) { perror("pipe2"); return 1; }
                args.out = out[1];
                args.err = err[1];
            }
            int pidfd = -1, slot = 0;
            while (slots[slot].pid != 0) slot++;
            slots[slot].stack = NULL;
            pid_t pid;
            if (use_vm) {
                slots[slot].stack = malloc(STACK_SIZE);
                if (!slots[slot].stack) { perror("malloc"); return 1; }
                pid = clone(child_main, slots[slot].stack + STACK_SIZE, CLONE_VM | SIGCHLD | (use_pidfd ? CLONE_PIDFD : 0), &args, &pidfd);
            } else {
                pid = fork();
                if (pid == 0) child_main(&args);
            }
            if (pid < 0) { perror("spawn"); return 1; }
            slots[slot].pid = pid;
            slots[slot].pidfd = pidfd;
            if (use_pipes) {
                close(out[1]);
                close(err[1]);
                watch(epoll, out[0], (uint64_t)out[0] << 32 | 1);
                watch(epoll, err[0], (uint64_t)err[0] << 32 | 1);
            }
            if (use_pidfd) watch(epoll, pidfd, (uint64_t)pidfd << 32 | 2);
            running++;
            started++;
        }
        if (use_pidfd) {
            struct epoll_event events[16];
            int n = epoll_wait(epoll, events, 16, 1000);
            if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
            for (int i = 0; i < n; i++) {
                int fd = (int)(events[i].data.u64 >> 32);
                epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL);
                if ((events[i].data.u64 & 3) == 2) {
                    siginfo_t info;
                    if (waitid(P_PIDFD, (id_t)fd, &info, WEXITED) != 0) { perror("waitid"); return 1; }
                    if (info.si_code != CLD_EXITED || info.si_status != 0) failed++;
                    for (int k = 0; k < SLOTS; k++) if (slots[k].pid != 0 && slots[k].pidfd == fd) { free(slots[k].stack); slots[k].pid = 0; }
                    running--;
                    done++;
                }
                close(fd);
            }
        } else {
            int status;
            pid_t pid = waitpid(-1, &status, 0);
            if (pid < 0) { perror("waitpid"); return 1; }
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
            for (int k = 0; k < SLOTS; k++) if (slots[k].pid == pid) { free(slots[k].stack); slots[k].pid = 0; }
            running--;
            done++;
        }
    }
    printf("%.1f\n", now_ms() - start);
    if (failed) { fprintf(stderr, "%d children failed\n", failed); return 1; }
    return 0;
}
