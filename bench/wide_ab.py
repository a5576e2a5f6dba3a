#!/usr/bin/env python3
"""Wide-DAG A/B: slipway binaries against `make -j2`, interleaved round by round.

The machines here drift by ±15 % within minutes, so each round runs every binary and make back to back
and the figure is the median of the per-round ratios (binary ÷ make), which drift cancels out of.

    python3 bench/wide_ab.py [--rounds 15] [--jobs 1000] [--floor] BIN [BIN ...]

--floor also runs bench/floor.c (built with cc; needs libsqlite3-dev) in both modes: the durable floor, the
least any engine keeping issue 2's rules can do per job.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, time

from wide_repo import make_wide_makefile, wide_work

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--floor", action="store_true")
    parser.add_argument("--json", help="also write the medians to this file (bench/run.sh's summary reads it)")
    args = parser.parse_args()
    with wide_work("slipway-wide-ab.", args.jobs) as (work, repo):
        make_wide_makefile(os.path.join(work, "wide.mk"), args.jobs)

        def timed(command):
            shutil.rmtree(os.path.join(repo, ".slipway"), ignore_errors=True)
            if args.floor:
                shutil.rmtree(os.path.join(work, "floor"), ignore_errors=True)
                os.makedirs(os.path.join(work, "floor", "logs"))
            started = time.perf_counter()
            subprocess.run(command, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            return time.perf_counter() - started

        make = ["make", "-s", "-j2", "-f", os.path.join(work, "wide.mk")]
        commands = [[os.path.realpath(b), "run", "--plain", "--jobs", "2"] for b in args.binaries]
        if args.floor:
            floor = os.path.join(work, "floor-bin")
            here = os.path.dirname(os.path.abspath(__file__))
            subprocess.run(["cc", "-O2", "-o", floor, os.path.join(here, "floor.c"), "-lsqlite3"], check=True)
            for mode in ("journal", "tables"):
                commands.append([floor, os.path.join(work, "floor", "db"), os.path.join(work, "floor", "logs"), str(args.jobs), "2", mode])
                args.binaries.append(f"floor ({mode})")
        for command in commands:  # warm-up
            timed(command)
        timed(make)
        times = {i: [] for i in range(len(commands))}
        ratios = {i: [] for i in range(len(commands))}
        make_times = []
        for round_ in range(args.rounds):
            order = list(range(len(commands)))
            if round_ % 2: order.reverse()
            m = timed(make)
            make_times.append(m)
            for i in order:
                t = timed(commands[i])
                times[i].append(t)
                ratios[i].append(t / m)
        print(f"{args.rounds} rounds, {args.jobs} jobs; make -j2 median {statistics.median(make_times) * 1000:.0f} ms")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rounds": args.rounds, "jobs": args.jobs, "make_ms": statistics.median(make_times) * 1000,
                           "binaries": [{"name": b, "ms": statistics.median(times[i]) * 1000, "ratio": statistics.median(ratios[i]),
                                         "quartiles": [statistics.quantiles(ratios[i], n=4)[0], statistics.quantiles(ratios[i], n=4)[2]]}
                                        for i, b in enumerate(args.binaries)]}, f)
        for i, b in enumerate(args.binaries):
            print(f"{b}: median {statistics.median(times[i]) * 1000:.0f} ms, "
                  f"median ratio to make {statistics.median(ratios[i]):.2f}x "
                  f"(quartiles {statistics.quantiles(ratios[i], n=4)[0]:.2f}-{statistics.quantiles(ratios[i], n=4)[2]:.2f})")

if __name__ == "__main__":
    main()
