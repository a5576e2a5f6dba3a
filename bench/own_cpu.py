#!/usr/bin/env python3
"""Wide DAG: each slipway binary's own CPU time and the CPUs' idle time while jobs run, from the scheduler.

Wall times on these 2-vCPU machines drift by ±5 % between runs, more than most single changes to the engine
are worth. The scheduler's own accounting is steadier: `perf record -e sched:sched_stat_runtime` gives the
CPU time of every thread of the slipway process (its steps' processes are other processes and do not count),
and `sched:sched_switch` gives how long a CPU sat idle between the first step's start and the last one's
(make leaves ~20 ms of idle CPU time there on 1000 jobs: on two cores, idle time is a job not started).

    sudo python3 bench/own_cpu.py [--rounds 5] [--jobs 1000] BIN [BIN ...]

Needs `perf` (linux-perf) and permission to record scheduler tracepoints (root).
"""
import argparse, collections, os, re, shutil, statistics, subprocess

from wide_repo import wide_work

SWITCH = re.compile(r"\[(\d+)\]\s+(\d+\.\d+):\s+sched:sched_switch: prev_comm=(.*?) prev_pid=(\d+) .*?==> next_comm=(.*?) next_pid=(\d+)")
RUNTIME = re.compile(r"\s*(\d+)/(\d+)\s+\[\d+\]\s+\d+\.\d+:\s+sched:sched_stat_runtime: comm=(\S+) pid=\d+ runtime=(\d+)")


def measure(binary, repo, data):
    shutil.rmtree(os.path.join(repo, ".slipway"), ignore_errors=True)
    subprocess.run(["perf", "record", "-q", "-a", "-m", "16M", "-e", "sched:sched_stat_runtime", "-e", "sched:sched_switch",
                    "-o", data, "--", binary, "run", "--plain", "--jobs", "2"],
                   cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    out = subprocess.run(["perf", "script", "-i", data, "-F", "pid,tid,cpu,time,event,trace"], capture_output=True, text=True).stdout
    runtime = collections.Counter()
    switches = []
    for line in out.splitlines():
        m = RUNTIME.match(line)
        if m:
            runtime[(m.group(1), m.group(3))] += int(m.group(4))
            continue
        m = SWITCH.search(line)
        if m:
            switches.append((float(m.group(2)), int(m.group(1)), m.group(4), m.group(5), m.group(6)))
    # The slipway process: the thread group of the busiest `slipway-engine` thread (steps' processes carry that
    # name only until they exec, in thread groups of their own).
    group = max((key for key in runtime if key[1] == "slipway-engine"), key=lambda key: runtime[key])[0]
    own = sum(value for key, value in runtime.items() if key[0] == group) / 1e6
    engine = runtime[(group, "slipway-engine")] / 1e6
    steps = [t for t, _, _, comm, _ in switches if comm == "true"]
    first, last = min(steps), max(steps)
    idle, since = 0.0, {}
    for t, cpu, prev_pid, _, next_pid in switches:
        if prev_pid == "0" and cpu in since and first <= t <= last:
            idle += t - max(since.pop(cpu), first)
        if next_pid == "0":
            since[cpu] = t
    return own, idle * 1000, (last - first) * 1000, engine


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    with wide_work("slipway-own-cpu.", args.jobs) as (work, repo):
        data = os.path.join(work, "perf.data")
        results = collections.defaultdict(list)
        for _ in range(args.rounds):
            for binary in args.binaries:
                results[binary].append(measure(os.path.realpath(binary), repo, data))
        print(f"{args.rounds} rounds, {args.jobs} jobs, --jobs 2 (medians)")
        for binary in args.binaries:
            own, idle, phase, engine = (statistics.median(r[i] for r in results[binary]) for i in range(4))
            print(f"{binary}: own CPU {own:.1f} ms (engine threads {engine:.1f}), idle CPU while jobs run {idle:.1f} ms of a {phase:.0f} ms jobs phase")


if __name__ == "__main__":
    main()
