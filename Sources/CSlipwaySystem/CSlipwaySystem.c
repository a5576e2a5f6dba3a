#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include "CSlipwaySystem.h"

int slipway_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int slipway_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}

int slipway_set_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

int slipway_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
#else
    (void)actions; (void)from;
    return -1;
#endif
}

/* What the child writes before it execs or gives up; shared with the parent, which vfork suspends. */
struct slipway_child_report { volatile int error; volatile int stage; };

/* Signals the child sets back to their default before it unblocks signals: those this process may ignore or
   catch itself (Ctrl-C handling, ignored SIGPIPE), the synchronous ones the Swift runtime's backtracer
   catches, and every other signal that was not at its default when the first step started. A handler of
   this process must not run in the child, which shares its memory until execve; execve would reset caught
   signals by itself, but ignored ones it keeps. Signal n is bit n: a detached child tests them without libc. */
static uint32_t slipway_reset_signals;
static pthread_once_t slipway_reset_signals_once = PTHREAD_ONCE_INIT;

static void slipway_collect_reset_signals(void) {
    static const int always[] = { SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM, SIGWINCH,
                                  SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGABRT, SIGSYS };
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++) slipway_reset_signals |= UINT32_C(1) << always[i];
    for (int signal_number = 1; signal_number < 32; signal_number++) {
        struct sigaction current;
        if (signal_number == SIGKILL || signal_number == SIGSTOP) continue;
        if (sigaction(signal_number, NULL, &current) == 0 && current.sa_handler != SIG_DFL) slipway_reset_signals |= UINT32_C(1) << signal_number;
    }
}

static int slipway_resets(int signal_number) { return (slipway_reset_signals >> signal_number) & 1; }

/* A pipe end numbered 0-2 (this process started with one of them closed) would be overwritten in the child, or
   keep its close-on-exec flag through a dup2 onto itself: the child gets a copy numbered 3 or above, which the
   caller closes after the start (*moved). Returns 0, or the errno. */
static int slipway_move_above_stdio(int *fd, int *moved) {
    *moved = -1;
    if (*fd >= 3) return 0;
    *moved = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    if (*moved < 0) return errno;
    *fd = *moved;
    return 0;
}

/* The child's side: only async-signal-safe calls on the parent's memory, never a return. */
static __attribute__((noinline, noreturn)) void slipway_child(const char *path, char *const argv[], char *const envp[],
                                                             const char *dir, int out_fd, int err_fd,
                                                             struct slipway_child_report *report) {
    /* Dispositions are the child's own (no CLONE_SIGHAND). */
    struct sigaction action = { .sa_handler = SIG_DFL };
    sigemptyset(&action.sa_mask);
    for (int signal_number = 1; signal_number < 32; signal_number++) {
        if (slipway_resets(signal_number)) sigaction(signal_number, &action, NULL);
    }
    report->stage = 1;
    if (setpgid(0, 0) != 0) goto fail;
    report->stage = 2;
    int null = open("/dev/null", O_RDONLY);
    if (null < 0) goto fail;
    if (null != 0) {
        if (dup2(null, 0) < 0) goto fail;
        close(null);
    }
    report->stage = 3;
    /* Both are 3 or above (slipway_spawn moved them), so neither is overwritten before it is copied. */
    if (dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) goto fail;
    report->stage = 4;
    if (dir != NULL && chdir(dir) != 0) goto fail;
    report->stage = 5;
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) goto fail;
    report->stage = 6;
    execve(path, argv, envp);
fail:
    report->error = errno;
    _exit(127);
}

struct slipway_child_arguments {
    const char *path; char *const *argv; char *const *envp; const char *dir; int out_fd, err_fd;
    struct slipway_child_report *report;
};

static int slipway_child_entry(void *p) {
    struct slipway_child_arguments *a = p;
    slipway_child(a->path, a->argv, a->envp, a->dir, a->out_fd, a->err_fd, a->report);
}

pid_t slipway_spawn(const char *path, char *const argv[], char *const envp[], const char *dir,
                    int out_fd, int err_fd, int *error, int *stage, int *pidfd) {
    struct slipway_child_report report = { 0, 0 };
    pthread_once(&slipway_reset_signals_once, slipway_collect_reset_signals);
    int moved_out, moved_err;
    if ((*error = slipway_move_above_stdio(&out_fd, &moved_out)) != 0) { *stage = 3; return -1; }
    if ((*error = slipway_move_above_stdio(&err_fd, &moved_err)) != 0) { *stage = 3; if (moved_out >= 0) close(moved_out); return -1; }
    sigset_t all, old;
    sigfillset(&all);
    /* No handler of this process may run in the child while it shares our memory. SIGCHLD stays open: it is
       only ever sent to this process, not to the child, and blocked here it would not be dropped as ignored
       but queued, waking another thread for every step that ends while this one waits in vfork. */
    sigdelset(&all, SIGCHLD);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    *pidfd = -1;
    pid_t pid = -1;
#ifdef CLONE_PIDFD
    {
        /* vfork's semantics (the child borrows this thread's memory until it execs), plus the child's pidfd
           from the same call instead of a pidfd_open after it. The child's stack is a part of this frame,
           which waits. */
        char stack[32 * 1024] __attribute__((aligned(16)));
        struct slipway_child_arguments arguments = { path, argv, envp, dir, out_fd, err_fd, &report };
        int fd = -1;
        pid = clone(slipway_child_entry, stack + sizeof stack, CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &arguments, &fd);
        if (pid > 0) *pidfd = fd;
    }
    if (pid < 0 && errno == EINVAL)  /* a kernel before 5.2 */
#endif
    {
        pid = vfork();
        if (pid == 0) slipway_child(path, argv, envp, dir, out_fd, err_fd, &report);
    }
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (moved_out >= 0) close(moved_out);
    if (moved_err >= 0) close(moved_err);
    if (pid < 0) {
        *error = saved;
        *stage = 0;
        return -1;
    }
    if (report.error != 0) {
        /* The child never exec'd: it has exited (vfork returned), reap it. */
        if (*pidfd >= 0) { close(*pidfd); *pidfd = -1; }
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        *error = report.error;
        *stage = report.stage;
        return -1;
    }
    return pid;
}

/* ---- Detached starts: the caller does not wait for the child's exec. ----
   The child shares this process's memory (CLONE_VM) while the caller's thread goes on, so it touches only
   its launch block (its stack, its copies of the strings, its report) and makes raw system calls: a libc
   wrapper could write errno, which lives in the caller thread's TLS, or take a lock another thread holds. */

#if defined(CLONE_PIDFD) && (defined(__x86_64__) || defined(__aarch64__))
#define SLIPWAY_DETACHED_SPAWN 1

static inline long slipway_raw_syscall(long number, long a, long b, long c, long d) {
#if defined(__x86_64__)
    long result;
    register long r10 __asm__("r10") = d;
    __asm__ volatile ("syscall" : "=a"(result) : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return result;
#else
    register long x8 __asm__("x8") = number;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile ("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
#endif
}

/* The kernel's struct sigaction, for SIG_DFL (no handler, so no restorer). */
struct slipway_kernel_sigaction { void *handler; unsigned long flags; void *restorer; uint64_t mask; };

#define SLIPWAY_LAUNCH_STACK (16 * 1024)

struct slipway_launch {
    struct slipway_child_report report;
    const char *path; char **argv; char **envp; const char *dir; int out_fd, err_fd, null_fd;
    char stack[SLIPWAY_LAUNCH_STACK] __attribute__((aligned(16)));
    /* then argv and envp pointer arrays, then the strings */
};

static __attribute__((noreturn)) void slipway_launch_fail(struct slipway_launch *launch, long result, int stage) {
    launch->report.stage = stage;
    launch->report.error = (int)-result;
    for (;;) slipway_raw_syscall(SYS_exit_group, 127, 0, 0, 0);
}

static int slipway_launch_child(void *p) {
    struct slipway_launch *launch = p;
    struct slipway_kernel_sigaction action = { (void *)SIG_DFL, 0, NULL, 0 };
    for (int signal_number = 1; signal_number < 32; signal_number++) {
        if (slipway_resets(signal_number))
            slipway_raw_syscall(SYS_rt_sigaction, signal_number, (long)&action, 0, sizeof(uint64_t));
    }
    launch->report.stage = 1;
    long result = slipway_raw_syscall(SYS_setpgid, 0, 0, 0, 0);
    if (result < 0) slipway_launch_fail(launch, result, 1);
    if (launch->null_fd >= 3) {
        /* The caller's /dev/null, opened once (dup3 leaves the copy without close-on-exec). */
        result = slipway_raw_syscall(SYS_dup3, launch->null_fd, 0, 0, 0);
        if (result < 0) slipway_launch_fail(launch, result, 2);
    } else {
        long null = slipway_raw_syscall(SYS_openat, AT_FDCWD, (long)"/dev/null", O_RDONLY, 0);
        if (null < 0) slipway_launch_fail(launch, null, 2);
        if (null != 0) {
            result = slipway_raw_syscall(SYS_dup3, null, 0, 0, 0);
            if (result < 0) slipway_launch_fail(launch, result, 2);
            slipway_raw_syscall(SYS_close, null, 0, 0, 0);
        }
    }
    /* Both are 3 or above (moved by the caller), so dup3 never sees equal descriptors. */
    if ((result = slipway_raw_syscall(SYS_dup3, launch->out_fd, 1, 0, 0)) < 0) slipway_launch_fail(launch, result, 3);
    if ((result = slipway_raw_syscall(SYS_dup3, launch->err_fd, 2, 0, 0)) < 0) slipway_launch_fail(launch, result, 3);
    if (launch->dir != NULL && (result = slipway_raw_syscall(SYS_chdir, (long)launch->dir, 0, 0, 0)) < 0) slipway_launch_fail(launch, result, 4);
    uint64_t none = 0;
    if ((result = slipway_raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, sizeof none)) < 0) slipway_launch_fail(launch, result, 5);
    result = slipway_raw_syscall(SYS_execve, (long)launch->path, (long)launch->argv, (long)launch->envp, 0);
    slipway_launch_fail(launch, result, 6);
}

static size_t slipway_list_size(char *const list[], size_t *count) {
    size_t bytes = 0, n = 0;
    for (; list[n] != NULL; n++) bytes += strlen(list[n]) + 1;
    *count = n;
    return bytes;
}

static char **slipway_copy_list(char *const list[], size_t count, char **pointers, char **strings) {
    for (size_t i = 0; i < count; i++) {
        size_t length = strlen(list[i]) + 1;
        memcpy(*strings, list[i], length);
        pointers[i] = *strings;
        *strings += length;
    }
    pointers[count] = NULL;
    return pointers;
}

/* /dev/null for the children's stdin, opened once (close-on-exec, numbered 3 or above) instead of once a child;
   -1 when it could not be, and each child opens its own. */
static int slipway_null = -1;
static pthread_once_t slipway_null_once = PTHREAD_ONCE_INIT;

static void slipway_open_null(void) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && fd < 3) {
        int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        close(fd);
        fd = moved;
    }
    slipway_null = fd;
}

/* Set on a thread that keeps every asynchronous signal blocked (slipway_hold_signals): its detached starts
   need not block them around each clone and unblock them after. */
static __thread int slipway_signals_held = 0;

int slipway_hold_signals(void) {
    sigset_t held;
    sigfillset(&held);
    /* SIGCHLD stays open (see slipway_spawn). So do the signals only ever sent to the thread itself, which
       the child does not raise before its exec: faults and traps (for the crash handler) and SIGPIPE (a write
       to a reader that went away ends the process as before). */
    static const int open_signals[] = { SIGCHLD, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGABRT, SIGPIPE };
    for (size_t i = 0; i < sizeof open_signals / sizeof open_signals[0]; i++) sigdelset(&held, open_signals[i]);
    int result = pthread_sigmask(SIG_SETMASK, &held, NULL);
    if (result == 0) slipway_signals_held = 1;
    return result;
}

pid_t slipway_spawn_detached(const char *path, char *const argv[], char *const envp[], const char *dir,
                             int out_fd, int err_fd, int *error, int *pidfd, void **launch_out) {
    *launch_out = NULL;
    *pidfd = -1;
    pthread_once(&slipway_reset_signals_once, slipway_collect_reset_signals);
    size_t argc, envc;
    size_t strings = slipway_list_size(argv, &argc) + slipway_list_size(envp, &envc) + strlen(path) + 1 + (dir ? strlen(dir) + 1 : 0);
    size_t size = sizeof(struct slipway_launch) + (argc + envc + 2) * sizeof(char *) + strings;
    struct slipway_launch *launch = malloc(size);
    if (launch == NULL) { *error = ENOMEM; return -1; }
    launch->report.error = 0;
    launch->report.stage = 0;
    char **pointers = (char **)(launch + 1);
    char *cursor = (char *)(pointers + argc + envc + 2);
    launch->argv = slipway_copy_list(argv, argc, pointers, &cursor);
    launch->envp = slipway_copy_list(envp, envc, pointers + argc + 1, &cursor);
    size_t length = strlen(path) + 1;
    memcpy(cursor, path, length);
    launch->path = cursor;
    cursor += length;
    launch->dir = NULL;
    if (dir != NULL) {
        memcpy(cursor, dir, strlen(dir) + 1);
        launch->dir = cursor;
    }
    int moved_out, moved_err;
    if ((*error = slipway_move_above_stdio(&out_fd, &moved_out)) != 0) { free(launch); return -1; }
    if ((*error = slipway_move_above_stdio(&err_fd, &moved_err)) != 0) { if (moved_out >= 0) close(moved_out); free(launch); return -1; }
    launch->out_fd = out_fd;
    launch->err_fd = err_fd;
    pthread_once(&slipway_null_once, slipway_open_null);
    launch->null_fd = slipway_null;
    /* No handler of this process may run in the child, which shares its memory; SIGCHLD stays open, as for
       slipway_spawn (the child has no children of its own before its exec). */
    sigset_t all, old;
    if (!slipway_signals_held) {
        sigfillset(&all);
        sigdelset(&all, SIGCHLD);
        pthread_sigmask(SIG_SETMASK, &all, &old);
    }
    int fd = -1;
    pid_t pid = clone(slipway_launch_child, launch->stack + SLIPWAY_LAUNCH_STACK, CLONE_VM | CLONE_PIDFD | SIGCHLD, launch, &fd);
    int saved = errno;
    if (!slipway_signals_held) pthread_sigmask(SIG_SETMASK, &old, NULL);
    /* The child's descriptor table is its own copy: these closes do not reach it. */
    if (moved_out >= 0) close(moved_out);
    if (moved_err >= 0) close(moved_err);
    if (pid < 0) {
        free(launch);
        *error = saved;
        return -1;
    }
    /* The group exists when this returns, whether or not the child got to its own setpgid yet, so a cancel
       right away reaches it. (After the exec this fails with EACCES: the child did it.) */
    setpgid(pid, pid);
    *pidfd = fd;
    *launch_out = launch;
    return pid;
}

int slipway_launch_failure(void *launch, int *error, int *stage) {
    const struct slipway_launch *l = launch;
    if (l->report.error == 0) return 0;
    *error = l->report.error;
    *stage = l->report.stage;
    return 1;
}

void slipway_launch_release(void *launch) { free(launch); }

#else
pid_t slipway_spawn_detached(const char *path, char *const argv[], char *const envp[], const char *dir,
                             int out_fd, int err_fd, int *error, int *pidfd, void **launch_out) {
    (void)path; (void)argv; (void)envp; (void)dir; (void)out_fd; (void)err_fd; (void)pidfd;
    *launch_out = NULL;
    *error = ENOSYS;
    return -1;
}
int slipway_launch_failure(void *launch, int *error, int *stage) { (void)launch; (void)error; (void)stage; return 0; }
void slipway_launch_release(void *launch) { (void)launch; }
int slipway_hold_signals(void) { return 0; }  /* nothing to hold for: no detached starts here */
#endif

int slipway_pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int slipway_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int slipway_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int slipway_epoll_add(int epoll, int fd, uint64_t token) {
    struct epoll_event event = { .events = EPOLLIN, .data.u64 = token };
    return epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
}

int slipway_epoll_remove(int epoll, int fd) { return epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL); }

int slipway_epoll_wait(int epoll, uint64_t *tokens, int max, int timeout_ms) {
    struct epoll_event events[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epoll, events, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        tokens[i] = events[i].data.u64;
        /* A pipe whose writers are gone and that holds nothing: its end, without a read to learn it. */
        if ((events[i].events & (EPOLLHUP | EPOLLIN)) == EPOLLHUP) tokens[i] |= SLIPWAY_EPOLL_HUNG_UP;
    }
    return n;
}

void slipway_set_thread_name(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }

int slipway_pipe_available(int fd) {
    int available = 0;
    return ioctl(fd, FIONREAD, &available) == 0 ? available : -1;
}
