#!/usr/bin/env python3
"""Runs shell commands alternately several times and prints medians and ratios.

Usage: compare.py --runs 5 --title "SSH true, 50 targets" NAME=COMMAND [NAME=COMMAND ...]

The first command is the reference (devbatch); every other row gets the ratio
reference/other for wall time and client CPU. Client CPU is user+system time of the command
and every child process it waited for (getrusage of the reaped child, as `time` reports it).
A command that exits non-zero is reported as failed, never timed as if it had succeeded.
Rows are also appended as JSON lines to $BENCH_RESULTS when that is set.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_once(command):
    start = time.monotonic()
    proc = subprocess.Popen(
        ["bash", "-c", command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # wait4 gives the rusage of the child and of all its reaped descendants.
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode, stderr.decode(errors="replace")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--title", required=True)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("commands", nargs="+")
    args = parser.parse_args()
    named = [c.split("=", 1) for c in args.commands]
    samples = {name: [] for name, _ in named}
    failures = {name: None for name, _ in named}
    for _ in range(args.warmup):
        for name, command in named:
            run_once(command)
    for _ in range(args.runs):
        for name, command in named:  # alternate: one run of each, then again
            wall, cpu, code, err = run_once(command)
            if code != 0:
                failures[name] = f"exit {code}: {err.strip().splitlines()[-1] if err.strip() else ''}"
            samples[name].append((wall, cpu))

    ref_name = named[0][0]
    ref_wall = statistics.median(w for w, _ in samples[ref_name])
    ref_cpu = statistics.median(c for _, c in samples[ref_name])
    print(f"\n### {args.title} ({args.runs} alternating runs, medians)\n")
    print("| tool | wall | client CPU | devbatch/tool wall | devbatch/tool CPU | note |")
    print("|---|---:|---:|---:|---:|---|")
    for name, _ in named:
        wall = statistics.median(w for w, _ in samples[name])
        cpu = statistics.median(c for _, c in samples[name])
        note = f"FAILED ({failures[name]})" if failures[name] else ""
        print(
            f"| {name} | {wall:.3f} s | {cpu:.3f} s | {ref_wall / wall:.2f}x | "
            f"{(ref_cpu / cpu) if cpu > 0 else float('nan'):.2f}x | {note} |"
        )
        if os.environ.get("BENCH_RESULTS"):
            with open(os.environ["BENCH_RESULTS"], "a") as out:
                out.write(json.dumps({"title": args.title, "tool": name, "wall_s": wall,
                                      "cpu_s": cpu, "failed": failures[name]}) + "\n")
    sys.stdout.flush()
    if any(failures.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
