#!/usr/bin/env python3
"""Wide DAG: where the engine thread's CPU goes, by part of a job's path, from call stacks.

The engine threads' (lanes') CPU time a job is a share of the wide DAG's pace (bench/RESULTS.md, 2026-11-25):
this shows which parts of a job's path hold it. Each row is inclusive (a part's callees count in it), as a share
of the engine thread's samples in the jobs phase and as µs a job.

    sudo python3 bench/engine_profile.py [--runs 6] [--jobs 1000] [--top 40] BIN

Needs `perf` (linux-perf) and permission to sample (root); `swift demangle` names the symbols when it is on PATH.
"""
import argparse, collections, os, re, shutil, subprocess

from wide_repo import wide_work

# A part of the path: the label and a substring of the (mangled or C) symbol that marks it.
PARTS = [
    ("step start (spawn, all)", "StepProcessO5spawn"),
    ("  clone (kernel)", "kernel_clone"),
    ("  pipes", "do_pipe2"),
    ("engine turn (RunDriver.turn)", "RunDriverC4turn"),
    ("  journal append", "RunJournalC6append"),
    ("  journal record encoding", "RunJournalCodecO6record"),
    ("  run state machine", "RunStateMachineV6handle"),
    ("  job resolution", "ResolvedJobV7resolve"),
    ("  definition JSON", "ResolvedJobV13canonicalJSON"),
    ("  progress line", "PlainReporter"),
    ("attempt (JobExecutor.runAttempt)", "JobExecutorC10runAttempt"),
    ("  workspace check-in", "WorkspacePoolC7checkIn"),
    ("  process configuration", "JobExecutorC20processConfiguration"),
    ("step end (superviseAll)", "LoopC12superviseAll"),
    ("waiting (epoll_wait)", "do_epoll_wait"),
    ("scheduling", "__schedule"),
    ("reference counting", "swift_re"),
    ("allocation", "malloc"),
]


def demangle(symbols):
    if not shutil.which("swift"):
        return {s: s for s in symbols}
    mangled = [s for s in symbols if s.startswith("$s")]
    out = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(mangled),
                         capture_output=True, text=True).stdout.splitlines()
    names = {s: s for s in symbols}
    names.update(zip(mangled, out))
    return names


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    binary = os.path.realpath(args.binary)
    inclusive = collections.Counter()
    samples = 0
    with wide_work("slipway-engine-profile.", args.jobs) as (work, repo):
        data = os.path.join(work, "perf.data")
        for _ in range(args.runs):
            shutil.rmtree(os.path.join(repo, ".slipway"), ignore_errors=True)
            subprocess.run(["perf", "record", "-q", "-F", "20000", "-g", "-o", data, "--", binary, "run", "--plain", "--jobs", "2"],
                           cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,tid,ip,sym"], capture_output=True, text=True).stdout
            main_pid = None
            for block in out.split("\n\n"):
                lines = block.strip("\n").split("\n")
                head = re.match(r"\s*(.*?)\s+(\d+)/(\d+)", lines[0]) if lines and lines[0].strip() else None
                if not head:
                    continue
                comm, pid, _ = head.groups()
                main_pid = main_pid or pid
                # The engine thread of the slipway process (its steps carry the name until they exec, in
                # processes of their own).
                if comm != "slipway-engine" or pid != main_pid:
                    continue
                samples += 1
                symbols = set()
                for line in lines[1:]:
                    parts = line.strip().split(None, 1)
                    if len(parts) == 2:
                        symbols.add(re.sub(r"\+0x[0-9a-f]+$", "", parts[1]))
                for symbol in symbols:
                    inclusive[symbol] += 1
    if not samples:
        raise SystemExit("no samples of the engine thread: is perf allowed to sample (root)?")
    per_job_us = samples / 20000 / args.runs / args.jobs * 1e6
    print(f"{args.runs} runs of {args.jobs} jobs: {samples} engine-thread samples, ~{per_job_us:.0f} µs a job "
          f"(sampled at 20 kHz, profiling overhead included)\n")
    print(f"{'part of the path':42} {'share':>6} {'µs/job':>7}")
    for label, marker in PARTS:
        count = max((c for s, c in inclusive.items() if marker in s), default=0)
        print(f"{label:42} {100 * count / samples:5.1f}% {per_job_us * count / samples:7.1f}")
    print(f"\ntop {args.top} symbols, inclusive:")
    top = inclusive.most_common(args.top)
    names = demangle([s for s, _ in top])
    for symbol, count in top:
        print(f"{100 * count / samples:5.1f}%  {names[symbol][:150]}")


if __name__ == "__main__":
    main()
