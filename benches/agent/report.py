#!/usr/bin/env python3
"""Print the agent benchmark table from a results directory (see run.sh).

Ratios are against real kube-proxy v1.30.3 in IPVS mode, measured with a
real API server on the same UML kernel (/work/shared/notes/anchors.md).
"""
import os
import statistics
import sys

# N -> (IPVS complete s, first full sync s, change visible median s, RSS MB)
KUBE_PROXY = {
    100: (10.8, 21.5, 9.5, 57),
    1000: (11.7, 119, 10.2, 75),
    3000: (27.2, 413, 17.7, 119),
}
# Targets at N = 3,000 (issue #5 item 10).
TARGETS = {"complete_s": 10, "change_ms": 200, "rss_mb": 60}


def load(out):
    res = {}
    with open(os.path.join(out, "results.txt")) as f:
        for line in f:
            key, _, val = line.rstrip("\n").partition(" ")
            res.setdefault(key, []).append(val)
    env = {}
    with open(os.path.join(out, "bench.env")) as f:
        for line in f:
            if "=" in line:
                k, v = line.strip().split("=", 1)
                env[k] = v.strip('"')
    return res, env


def one(res, key, conv=float):
    vals = res.get(key)
    return conv(vals[-1]) if vals else None


def med(res, key, scale=1.0):
    """Median of all samples of key (one per repetition), scaled."""
    vals = [float(v) * scale for v in res.get(key, [])]
    return statistics.median(vals) if vals else None


def span(res, key, scale=1.0):
    vals = [float(v) * scale for v in res.get(key, [])]
    return (min(vals), max(vals)) if vals else None


def fmt(v, spec, missing="-"):
    return missing if v is None else format(v, spec)


def main():
    out = sys.argv[1]
    res, env = load(out)
    tck = one(res, "clk_tck", int) or 100
    load_path = os.path.join(out, "host_load.txt")
    host_load = open(load_path).read().split("\n") if os.path.exists(load_path) else []
    host_load = ", ".join(l for l in host_load if l)
    print(
        f"agent benchmark, revision {env.get('REVISION', '?')}, {env.get('DATE', '?')}, "
        f"kernel {one(res, 'kernel', str)} (UML, 1 CPU), "
        f"{env.get('REALS')} endpoints per Service, {env.get('CHANGES')} changes per run, "
        f"{env.get('REPEAT', 1)} runs per size; host load average {host_load or '?'}"
    )
    print()
    print(
        "| Services | complete: median (range) | kube-proxy | change: median / max | kube-proxy median "
        "| VmRSS / VmHWM | kube-proxy RSS | CPU to complete / total | state = plan |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    checks = []
    details = []
    for n in env.get("SIZES", "").split():
        n_i = int(n)
        kp = KUBE_PROXY.get(n_i)
        complete_s = med(res, f"complete_us_{n}", 1e-6)
        c_span = span(res, f"complete_us_{n}", 1e-6)
        changes = [float(v) / 1000 for v in res.get(f"change_us_{n}", [])]
        ch_med = statistics.median(changes) if changes else None
        ch_max = max(changes) if changes else None
        rss_mb = med(res, f"rss_kb_end_{n}", 1 / 1024)
        hwm_mb = med(res, f"hwm_kb_end_{n}", 1 / 1024)
        cpu_c = med(res, f"cpu_ticks_complete_{n}", 1 / tck)
        cpu_e = med(res, f"cpu_ticks_end_{n}", 1 / tck)
        oks = [int(v) for v in res.get(f"state_ok_{n}", [])]
        runs = len(res.get(f"complete_us_{n}", []))

        c = f"{fmt(complete_s, '.2f')} s"
        if c_span and runs > 1:
            c += f" ({c_span[0]:.2f}-{c_span[1]:.2f}, {runs} runs)"
        kc = f"{kp[0]} s ({kp[0] / complete_s:.1f}x)" if kp and complete_s else "-"
        ch = f"{fmt(ch_med, '.0f')} / {fmt(ch_max, '.0f')} ms ({len(changes)} changes)"
        kch = f"{kp[2]} s ({kp[2] * 1000 / ch_med:.0f}x)" if kp and ch_med else "-"
        m = f"{fmt(rss_mb, '.1f')} / {fmt(hwm_mb, '.1f')} MB"
        km = f"{kp[3]} MB ({hwm_mb / kp[3]:.2f}x)" if kp and hwm_mb else "-"
        cpu = f"{fmt(cpu_c, '.2f')} / {fmt(cpu_e, '.2f')} s"
        st = "-" if not oks else ("yes" if all(oks) else "NO")
        st += f" ({one(res, f'state_lines_{n}', int)} lines)"
        print(f"| {n_i:,} | {c} | {kc} | {ch} | {kch} | {m} | {km} | {cpu} | {st} |")
        full = med(res, f"kubeproxy_sync_full_proxy_rules_duration_seconds_sum_{n}")
        partial_sum = med(res, f"kubeproxy_sync_partial_proxy_rules_duration_seconds_sum_{n}")
        partial_n = med(res, f"kubeproxy_sync_partial_proxy_rules_duration_seconds_count_{n}")
        details.append(
            f"| {n_i:,} | {fmt(med(res, f'listed_us_{n}', 1e-6), '.2f')} s "
            f"| {fmt(full, '.2f')} s "
            f"| {fmt(partial_sum / partial_n * 1000 if partial_sum is not None and partial_n else None, '.1f')} ms "
            f"| {fmt(med(res, f'plan_us_{n}', 1e-6), '.2f')} s |"
        )
        if n_i == 3000:
            checks = [
                ("complete < 10 s", complete_s is not None and complete_s < TARGETS["complete_s"]),
                ("change median < 200 ms", ch_med is not None and ch_med < TARGETS["change_ms"]),
                ("RSS (VmHWM) < 60 MB", hwm_mb is not None and hwm_mb < TARGETS["rss_mb"]),
            ]
    print()
    print("(x) = kube-proxy's figure / ours for times, ours / kube-proxy's for memory.")
    print(
        "kube-proxy's first full sync (IPVS + ipset + iptables) took 21.5 / 119 / 413 s at 100 / 1,000 / 3,000; "
        "the agent's figures are IPVS + kube-ipvs0 only (--packet-filter none)."
    )
    if checks:
        print("targets at 3,000: " + "; ".join(f"{k}: {'met' if ok else 'NOT met'}" for k, ok in checks))
    print()
    print("Where the time to complete goes (medians):")
    print()
    print(
        "| Services | all manifests read (from start, agent log) | first full sync (agent metric) "
        "| one change's sync (agent metric, mean) | `ipvs-proxy plan` on the same files (own process) |"
    )
    print("|---|---|---|---|---|")
    for d in details:
        print(d)
    phases = ["read", "plan", "log", "bind", "ipvs", "filter", "unbind", "total"]
    rows = []
    for n in env.get("SIZES", "").split():
        vals = [med(res, f"first_sync_{p}_ms_{n}") for p in phases]
        if any(v is not None for v in vals):
            end = med(res, f"first_sync_end_us_{n}", 1e-6)
            rows.append(
                f"| {int(n):,} | " + " | ".join(fmt(v, ".0f") for v in vals) + f" | {fmt(end, '.2f')} s |"
            )
    if rows:
        print()
        print("The first full sync by phase (the agent's `sync done` line; ms, medians):")
        print()
        print(
            "| Services | read kernel | plan | log lines | bind addresses | IPVS | packet filter | unbind "
            "| total | ended (from start) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(r)
    for f in res.get("fail", []):
        print(f"FAIL: {f}")


if __name__ == "__main__":
    main()
