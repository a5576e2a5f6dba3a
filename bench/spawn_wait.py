#!/usr/bin/env python3
"""Wide DAG: how long slipway's (or make's) thread is held inside its step starts, and what waits meanwhile.

A vfork'd start holds its caller until the child has exec'd; on two cores the child often waits for the other,
busy CPU first. From `perf record -a` of the clone/vfork system calls' entries and exits and of every process's
exit: the time the starting thread spent inside them (total, median, third quartile), and how many steps ended
while it was inside one, with how long their ends then waited for the thread to come back.

    sudo python3 bench/spawn_wait.py [--jobs 1000] BIN|make [BIN|make ...]

Needs `perf` (linux-perf) and permission to record system call tracepoints (root).
"""
import argparse, bisect, os, re, shutil, statistics, subprocess

from wide_repo import make_wide_makefile, wide_work

EVENTS = ["syscalls:sys_enter_clone", "syscalls:sys_exit_clone", "syscalls:sys_enter_clone3", "syscalls:sys_exit_clone3",
          "syscalls:sys_enter_vfork", "syscalls:sys_exit_vfork", "sched:sched_process_exit"]
LINE = re.compile(r"\s*(.+?)\s+(\d+)\s+(\d+\.\d+):\s+(\S+):")


def measure(command, thread_name, cwd, data):
    shutil.rmtree(os.path.join(cwd, ".slipway"), ignore_errors=True)
    record = ["perf", "record", "-q", "-a", "-o", data] + [arg for event in EVENTS for arg in ("-e", event)] + ["--"] + command
    subprocess.run(record, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,tid,time,event"], capture_output=True, text=True).stdout
    entered, windows, exits = {}, [], []
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        comm, tid, t, event = m.group(1), m.group(2), float(m.group(3)), m.group(4)
        if "sys_enter_" in event and comm.startswith(thread_name):
            entered[tid] = t
        elif "sys_exit_" in event and tid in entered:
            windows.append((entered.pop(tid), t))
        elif event == "sched:sched_process_exit" and comm == "true":
            exits.append(t)
    exits.sort()
    held = [(end - start) * 1e6 for start, end in windows]
    waited, delay = 0, 0.0
    for start, end in windows:
        i = bisect.bisect(exits, start)
        while i < len(exits) and exits[i] < end:
            waited += 1
            delay += end - exits[i]
            i += 1
    return len(windows), sum(held) / 1e3, statistics.median(held), statistics.quantiles(held, n=4)[2], waited, delay * 1e3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    with wide_work("slipway-spawn-wait.", args.jobs) as (work, repo):
        makefile = os.path.join(work, "wide.mk")
        make_wide_makefile(makefile, args.jobs)
        for binary in args.binaries:
            if binary == "make":
                command, name = ["make", "-s", "-j2", "-f", makefile], "make"
            else:
                command, name = [os.path.realpath(binary), "run", "--plain", "--jobs", "2"], "slipway-engine"
            starts, total, median, q3, waited, delay = measure(command, name, repo, os.path.join(work, "perf.data"))
            print(f"{binary}: {starts} starts, held {total:.1f} ms in all (median {median:.0f} µs, q3 {q3:.0f} µs); "
                  f"{waited} steps ended meanwhile and waited {delay:.1f} ms for their ends to be seen")


if __name__ == "__main__":
    main()
