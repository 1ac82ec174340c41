#!/usr/bin/env python3
"""The memory benchmark's table (see run.sh), from BENCH_OUT/MODE-N/.

    report.py BENCH_OUT
"""
import glob
import json
import os
import re
import sys


def mb(kb):
    return f"{kb / 1000:.1f}"


def main():
    out = sys.argv[1]
    if os.path.exists(os.path.join(out, "run.txt")):
        print("```")
        print(open(os.path.join(out, "run.txt")).read().rstrip())
        print("```")
        print()
    runs = []
    for d in glob.glob(os.path.join(out, "*-*")):
        f = os.path.join(d, "result.json")
        if os.path.exists(f):
            runs.append((d, json.load(open(f))))
    runs.sort(key=lambda r: (r[1]["mode"], r[1]["n"]))
    print("| mode | Services | peak VmHWM MB | steady VmRSS MB | complete s | changes | change ms median / p90 / max"
          " | RSS over the changes MB (first sample -> last, 2 s after) | heap at peak (dhat) MB | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for d, r in runs:
        samples = r.get("rss_samples") or []
        drift = "-"
        if samples:
            drift = f"{mb(samples[0][1])} -> {mb(samples[-1][1])}, {mb(r['after_changes']['VmRSS'])}"
        ch = r.get("change_ms") or {}
        heap = "-"
        top = os.path.join(d, "dhat-top.md")
        if os.path.exists(top):
            m = re.search(r"heap at t-gmax ([0-9.]+) MB", open(top).read())
            if m:
                heap = m.group(1)
        print(f"| {r['mode']} | {r['n']:,} | {mb(r.get('after_changes', r['steady'])['VmHWM'])} | {mb(r['steady']['VmRSS'])}"
              f" | {r['complete_s']} | {r['changes']} | {ch.get('median', '-')} / {ch.get('p90', '-')} / {ch.get('max', '-')}"
              f" | {drift} | {heap} | {' '.join(r['load_before'])} |")
    print()
    print("MB = 10^6 bytes. Peak: VmHWM at the end (after the changes); steady: VmRSS 2 s after"
          " the complete state; dhat's heap: requested bytes at the heap's peak, in the profiled run.")
    for d, r in runs:
        top = os.path.join(d, "dhat-top.md")
        if os.path.exists(top):
            print()
            print(f"### {r['mode']}, {r['n']:,} Services")
            print()
            print(open(top).read().rstrip())


if __name__ == "__main__":
    main()
