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


def fmt(v, spec, missing="-"):
    return missing if v is None else format(v, spec)


def main():
    out = sys.argv[1]
    res, env = load(out)
    tck = one(res, "clk_tck", int) or 100
    print(
        f"agent benchmark, revision {env.get('REVISION', '?')}, {env.get('DATE', '?')}, "
        f"kernel {one(res, 'kernel', str)} (UML, 1 CPU), "
        f"{env.get('REALS')} endpoints per Service, {env.get('CHANGES')} changes per size"
    )
    print()
    print(
        "| Services | complete (kube-proxy) | change median / max (kube-proxy median) "
        "| VmRSS / VmHWM (kube-proxy RSS) | CPU to complete / total | state = plan |"
    )
    print("|---|---|---|---|---|---|")
    checks = []
    for n in env.get("SIZES", "").split():
        n_i = int(n)
        kp = KUBE_PROXY.get(n_i)
        complete_us = one(res, f"complete_us_{n}")
        changes = [float(v) for v in res.get(f"change_us_{n}", [])]
        med = statistics.median(changes) / 1000 if changes else None
        mx = max(changes) / 1000 if changes else None
        rss = one(res, f"rss_kb_end_{n}")
        hwm = one(res, f"hwm_kb_end_{n}")
        cpu_c = one(res, f"cpu_ticks_complete_{n}")
        cpu_e = one(res, f"cpu_ticks_end_{n}")
        state_ok = one(res, f"state_ok_{n}", int)
        complete_s = complete_us / 1e6 if complete_us is not None else None
        rss_mb = rss / 1024 if rss is not None else None
        hwm_mb = hwm / 1024 if hwm is not None else None

        def ratio(kp_v, ours, faster=True):
            if kp_v is None or not ours:
                return ""
            return f", {kp_v / ours:.0f}x faster" if faster else f", {ours / kp_v:.2f}x"

        c = f"{fmt(complete_s, '.2f')} s"
        if kp:
            c += f" ({kp[0]} s{ratio(kp[0], complete_s)})"
        ch = f"{fmt(med, '.0f')} / {fmt(mx, '.0f')} ms over {len(changes)}"
        if kp:
            ch += f" ({kp[2]} s{ratio(kp[2] * 1000, med)})"
        m = f"{fmt(rss_mb, '.1f')} / {fmt(hwm_mb, '.1f')} MB"
        if kp:
            m += f" ({kp[3]} MB{ratio(kp[3], hwm_mb, faster=False)})"
        cpu = f"{fmt(cpu_c / tck if cpu_c is not None else None, '.2f')} / {fmt(cpu_e / tck if cpu_e is not None else None, '.2f')} s"
        st = {1: "yes", 0: "NO"}.get(state_ok, "-")
        st += f" ({one(res, f'state_lines_{n}', int)} lines)"
        print(f"| {n_i:,} | {c} | {ch} | {m} | {cpu} | {st} |")
        if n_i == 3000:
            checks = [
                ("complete < 10 s", complete_s is not None and complete_s < TARGETS["complete_s"]),
                ("change median < 200 ms", med is not None and med < TARGETS["change_ms"]),
                ("RSS (VmHWM) < 60 MB", hwm_mb is not None and hwm_mb < TARGETS["rss_mb"]),
            ]
    print()
    print(
        "kube-proxy first full sync (IPVS + ipset + iptables): 21.5 / 119 / 413 s at 100 / 1,000 / 3,000; "
        "the agent's figure is IPVS + kube-ipvs0 only (--packet-filter none)."
    )
    if checks:
        print("targets at 3,000: " + "; ".join(f"{k}: {'met' if ok else 'NOT met'}" for k, ok in checks))
    for f in res.get("fail", []):
        print(f"FAIL: {f}")


if __name__ == "__main__":
    main()
