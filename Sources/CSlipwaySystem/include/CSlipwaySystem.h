#ifndef CSLIPWAY_SYSTEM_H
#define CSLIPWAY_SYSTEM_H
#include <spawn.h>
#include <stdint.h>
#include <sys/types.h>

/// pipe2(O_CLOEXEC): both ends close-on-exec, so concurrently spawned steps never inherit each other's pipes.
int slipway_pipe_cloexec(int fds[2]);
/// posix_spawn_file_actions_addchdir_np (glibc >= 2.29), which Swift's Glibc module hides behind _GNU_SOURCE.
int slipway_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path);
/// posix_spawn_file_actions_addclosefrom_np (glibc >= 2.34): the child starts with only fds 0-2 (and below
/// `from`), so a long-lived child never holds its parent's pipes open; -1 where unavailable.
int slipway_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from);
/// Makes this process the reaper of orphaned descendants (PR_SET_CHILD_SUBREAPER).
int slipway_set_child_subreaper(void);
/// Starts PATH in a new process group with stdin from /dev/null, stdout/stderr on OUT_FD/ERR_FD and DIR as
/// its working directory, by clone(CLONE_VM|CLONE_VFORK|CLONE_PIDFD)+execve: the caller's thread waits only until the exec, the
/// child's stack is part of the caller's frame (none is mapped), and the signals to set back to default are read once per process, not per step (posix_spawn
/// asks about all 64 each time). Pipe ends numbered 0-2 are moved up first. Returns the pid, or -1 with
/// *error set to the errno and *stage to the step that failed (0 vfork, 1 setpgid, 2 stdin, 3 dup2,
/// 4 chdir, 5 signal mask, 6 execve). *pidfd is the child's pidfd (close-on-exec), or -1 on a kernel
/// before 5.2; the caller closes it.
pid_t slipway_spawn(const char *path, char *const argv[], char *const envp[], const char *dir,
                    int out_fd, int err_fd, int *error, int *stage, int *pidfd);
/// Starts a process as `slipway_spawn` does, but returns as soon as the child exists: the caller's thread
/// does not wait for the exec (on two cores a vfork'd child often waits for the other, busy CPU while its
/// parent's idles). The child works on a launch block of its own (stack, copies of the arguments, report),
/// which *launch holds until the process has been reaped: then `slipway_launch_failure` tells whether the
/// child failed before its exec (it exited 127; *error and *stage as for `slipway_spawn`) and
/// `slipway_launch_release` frees the block. Returns the pid with *pidfd set (never -1), or -1 with *error
/// (ENOSYS where unsupported: before Linux 5.2, or not x86-64/arm64; use `slipway_spawn`).
pid_t slipway_spawn_detached(const char *path, char *const argv[], char *const envp[], const char *dir,
                             int out_fd, int err_fd, int *error, int *pidfd, void **launch);
int slipway_launch_failure(void *launch, int *error, int *stage);
void slipway_launch_release(void *launch);
/// Blocks every asynchronous signal but SIGCHLD on the calling thread for good (faults and traps stay open),
/// so its detached starts skip blocking them around each clone: for a thread that only starts and supervises
/// processes. 0, or an error number.
int slipway_hold_signals(void);
/// pidfd_open(2): a descriptor that becomes readable when PID exits; -1 with errno (ENOSYS before Linux 5.3).
int slipway_pidfd_open(pid_t pid);
/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK).
int slipway_eventfd(void);
/// epoll without struct epoll_event in Swift (it is packed on x86-64): descriptors are registered for input
/// with a 64-bit token, and a wait returns the tokens of the ready ones, with SLIPWAY_EPOLL_HUNG_UP set on
/// those that hung up with nothing left to read (a pipe whose writers are all gone and that is empty).
#define SLIPWAY_EPOLL_HUNG_UP (1ULL << 62)
int slipway_epoll_create(void);
int slipway_epoll_add(int epoll, int fd, uint64_t token);
int slipway_epoll_remove(int epoll, int fd);
int slipway_epoll_wait(int epoll, uint64_t *tokens, int max, int timeout_ms);
/// How many bytes a pipe holds now (FIONREAD), or -1.
int slipway_pipe_available(int fd);
/// Names the calling thread (as `ps -L` and profilers show it).
void slipway_set_thread_name(const char *name);
#endif
