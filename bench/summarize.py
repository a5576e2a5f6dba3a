#!/usr/bin/env python3
"""Reads the hyperfine JSON files written by bench/run.sh and prints a markdown summary.

Usage: bench/summarize.py [OUT_DIR]   (default: bench/out next to this file)
"""
import json
import os
import sys


TARGET_STEP_MS = 2.0
TARGET_WIDE_RATIO = 1.2
TARGET_MBPS = 200.0
TARGET_CACHED_MS = 300.0


def load_raw(out, name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def load(out, name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        data = json.load(f)
    results = {}
    for r in data["results"]:
        results[r["command"]] = r
    return results


def ms(seconds):
    return seconds * 1000.0


def fmt_time(r):
    mean, sd = r["mean"], r.get("stddev") or 0.0
    if mean >= 1.0:
        return f"{mean:.3f} s ± {sd:.3f} s"
    return f"{ms(mean):.1f} ms ± {ms(sd):.1f} ms"


def verdict(ok):
    return "**PASS**" if ok else "**MISS**"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "out")
    params = {"steps": 500, "wide": 1000, "cached_jobs": 20, "output_bytes": 100_000_000}
    if os.path.exists(os.path.join(out, "params.json")):
        with open(os.path.join(out, "params.json")) as f:
            params.update(json.load(f))
    STEPS, WIDE, JOBS = params["steps"], params["wide"], params["cached_jobs"]
    OUTPUT_MB = params["output_bytes"] / 1e6
    rows = []  # (scenario, command, time, derived)
    targets = []  # (target, measured, verdict)

    a = load(out, "a-steps.json")
    if a:
        for name in ("slipway", "bash-c-loop", "bash-script", "make"):
            if name in a:
                per_step = ms(a[name]["mean"]) / STEPS
                rows.append((f"(a) {STEPS}-step chain", name, fmt_time(a[name]), f"{per_step:.2f} ms/step"))
        if "slipway" in a and "bash-c-loop" in a:
            overhead = (ms(a["slipway"]["mean"]) - ms(a["bash-c-loop"]["mean"])) / STEPS
            targets.append((f"per-step overhead (slipway − bash -c loop) / {STEPS} ≤ 2 ms",
                            f"{overhead:.2f} ms/step", verdict(overhead <= TARGET_STEP_MS)))
        if "slipway" in a and "make" in a:
            vs_make = (ms(a["slipway"]["mean"]) - ms(a["make"]["mean"])) / STEPS
            targets.append(("(info) overhead vs make chain", f"{vs_make:.2f} ms/step", "—"))

    b = load(out, "b-wide.json")
    if b:
        for name in ("slipway", "make", "make-logged", "ninja", "floor-journal", "floor-tables"):
            if name in b:
                per_job = ms(b[name]["mean"]) / WIDE
                rows.append((f"(b) {WIDE}-job wide DAG, 2 at a time", name, fmt_time(b[name]), f"{per_job:.2f} ms/job"))
        for peer in ("make", "ninja"):
            if "slipway" in b and peer in b:
                ratio = b["slipway"]["mean"] / b[peer]["mean"]
                targets.append((f"wide DAG slipway / {peer} -j2 ≤ 1.2×", f"{ratio:.2f}×",
                                verdict(ratio <= TARGET_WIDE_RATIO)))
        interleaved = load_raw(out, "b-interleaved.json")
        if interleaved and interleaved.get("binaries"):
            first = interleaved["binaries"][0]
            low, high = first["quartiles"]
            targets.append((f"wide DAG slipway / make -j2, median of {interleaved['rounds']} interleaved rounds ≤ 1.2×",
                            f"{first['ratio']:.2f}× (quartiles {low:.2f}–{high:.2f})", verdict(first["ratio"] <= TARGET_WIDE_RATIO)))
        if "slipway" in b and "make-logged" in b:
            ratio = b["slipway"]["mean"] / b["make-logged"]["mean"]
            targets.append(("(info) wide DAG slipway / make -j2 with a log file per job", f"{ratio:.2f}×", "—"))
        for floor in ("floor-journal", "floor-tables"):
            if floor in b and "make" in b:
                ratio = b[floor]["mean"] / b["make"]["mean"]
                targets.append((f"(info) durable floor in C ({floor}) / make -j2", f"{ratio:.2f}×", "—"))

    c = load(out, "c-output.json")
    if c:
        for name in ("slipway", "bash-devnull"):
            if name in c:
                mbps = OUTPUT_MB / c[name]["mean"]
                rows.append((f"(c) {OUTPUT_MB:g} MB from one step", name, fmt_time(c[name]), f"{mbps:.0f} MB/s"))
        if "slipway" in c:
            mbps = OUTPUT_MB / c["slipway"]["mean"]
            targets.append((f"capture of {OUTPUT_MB:g} MB ≥ 200 MB/s ({OUTPUT_MB:g} MB / slipway time)", f"{mbps:.0f} MB/s",
                            verdict(mbps >= TARGET_MBPS)))
            if "bash-devnull" in c:
                extra = c["slipway"]["mean"] - c["bash-devnull"]["mean"]
                factor = c["slipway"]["mean"] / c["bash-devnull"]["mean"]
                targets.append(("(info) capture overhead vs `> /dev/null`",
                                f"+{ms(extra):.0f} ms ({factor:.1f}×)", "—"))

    d = load(out, "d-cached.json")
    if d:
        for name in ("slipway-cached", "slipway-no-cache", "slipway-validate"):
            if name in d:
                rows.append((f"(d) {JOBS}-job pipeline re-run", name, fmt_time(d[name]), ""))
        if "slipway-cached" in d:
            cached = ms(d["slipway-cached"]["mean"])
            targets.append((f"cached re-run of {JOBS} jobs ≤ 300 ms", f"{cached:.0f} ms", verdict(cached <= TARGET_CACHED_MS)))

    print("| scenario | command | mean ± σ | derived |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print("| target | measured | result |")
    print("|---|---|---|")
    for t in targets:
        print("| " + " | ".join(t) + " |")


if __name__ == "__main__":
    main()
