#!/usr/bin/env python3
"""Print the filter benchmark table from a results directory (see run.sh).

Every figure of the filter-on agent is given with its ratio to the same
agent with --packet-filter none (the control), measured in the same boot.
"""
import os
import statistics
import sys

KINDS = [
    ("endpoint", "endpoint address replaced"),
    ("svc-add", "Service added"),
    ("svc-del", "Service deleted"),
    ("nodeport-add", "NodePort Service added"),
    ("lb-range", "LB source range changed"),
]


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


def changes(out, s):
    """kind -> list of dicts, from changes-S.txt."""
    path = os.path.join(out, f"changes-{s}.txt")
    by = {}
    if not os.path.exists(path):
        return by
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) < 8:
                continue
            p += ["0"] * (12 - len(p))  # older files: no netlink columns
            num = lambda v: None if v in ("na", "timeout", "skipped") else int(v)
            by.setdefault(p[0], []).append(
                {"t0": num(p[2]), "done": num(p[3]), "timeout": p[3] in ("timeout", "skipped"),
                 "ipvs": num(p[4]), "nft": num(p[5]), "pexecs": int(p[6]), "pus": int(p[7]),
                 "pgets": int(p[8]), "pgus": int(p[9]), "nltx": int(p[10]), "nlbytes": int(p[11])}
            )
    return by


def nft_log(out, s):
    path = os.path.join(out, f"nft-{s}.log")
    runs = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                p = line.split(None, 4)
                if len(p) >= 4:
                    runs.append((int(p[0]), int(p[1]), int(p[2]), int(p[3]), p[4].strip() if len(p) > 4 else ""))
    return runs


def windows(by, end_us):
    """(kind, t0, t_next) for every change, in time order."""
    allc = sorted(
        ((k, c["t0"]) for k, cs in by.items() for c in cs if c["t0"] is not None),
        key=lambda x: x[1],
    )
    return [(k, t, allc[i + 1][1] if i + 1 < len(allc) else end_us) for i, (k, t) in enumerate(allc)]


def fmt(v, spec, missing="-"):
    return missing if v is None else format(v, spec)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def main():
    out = sys.argv[1]
    res, env = load(out)
    tck = one(res, "clk_tck", int) or 100
    lp = os.path.join(out, "host_load.txt")
    host_load = ", ".join(l for l in open(lp).read().split("\n") if l) if os.path.exists(lp) else "?"
    print(
        f"filter benchmark, revision {env.get('REVISION', '?')}, {env.get('DATE', '?')}, "
        f"kernel {one(res, 'kernel', str)} (qemu TCG, {one(res, 'cpus', str)} vCPUs), "
        f"{env.get('REALS')} endpoints per Service, {env.get('CHANGES')} changes of each kind; "
        f"host load average (1/5/15 min) {host_load}"
    )
    print("on = nftables packet filter, off = --packet-filter none (control, same boot); "
          "ratio = on / off. Times: median / max over the changes, file rename to the kernel "
          "showing the change in IPVS and (on) in nft.")
    print()
    sizes = env.get("SIZES", "").split()
    modes = env.get("MODES", "on off").split()
    problems = []
    print("| Services | start to IPVS complete: on / off (ratio) | start to nft complete (on) "
          "| agent VmHWM MB: on / off | agent CPU s, whole run: on / off | nft table bytes |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        on, off = f"{n}_on", f"{n}_off"
        ci = {m: one(res, f"complete_ipvs_us_{n}_{m}") for m in modes}
        cn = one(res, f"complete_nft_us_{on}")
        hwm = {m: one(res, f"hwm_kb_end_{n}_{m}") for m in modes}
        cpu = {m: one(res, f"cpu_ticks_end_{n}_{m}") for m in modes}
        s = lambda v, sc, sp: fmt(None if v is None else v * sc, sp)
        print(
            f"| {int(n):,} | {s(ci.get('on'), 1e-6, '.2f')} / {s(ci.get('off'), 1e-6, '.2f')} s "
            f"({ratio(ci.get('on'), ci.get('off'))}) | {s(cn, 1e-6, '.2f')} s "
            f"| {s(hwm.get('on'), 1 / 1024, '.0f')} / {s(hwm.get('off'), 1 / 1024, '.0f')} "
            f"({ratio(hwm.get('on'), hwm.get('off'))}) "
            f"| {s(cpu.get('on'), 1 / tck, '.1f')} / {s(cpu.get('off'), 1 / tck, '.1f')} "
            f"({ratio(cpu.get('on'), cpu.get('off'))}) | {fmt(one(res, f'nft_table_bytes_{on}', int), ',')} |"
        )
    print()
    print("| Services | change | on: median / max ms | off: median / max ms | ratio of medians "
          "| on: nft runs per change | nft wall ms per change (median) | nft input bytes per change (median / max) "
          "| on: netlink transactions per change | netlink bytes per change (median / max) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        by = {m: changes(out, f"{n}_{m}") for m in modes}
        end_on = one(res, f"changes_end_us_{n}_on", int) or 0
        runs = nft_log(out, f"{n}_on")
        per = {}
        nl = {(k, c["t0"]): c for k, cs in by.get("on", {}).items() for c in cs}
        for kind, t0, t1 in windows(by.get("on", {}), end_on):
            rs = [r for r in runs if t0 <= r[0] < t1]
            c = nl.get((kind, t0), {})
            per.setdefault(kind, []).append(
                (len(rs), sum(r[1] - r[0] for r in rs) / 1000, sum(r[2] for r in rs),
                 c.get("nltx", 0), c.get("nlbytes", 0))
            )
        for kind, label in KINDS:
            stats = {}
            for m in modes:
                cs = by.get(m, {}).get(kind, [])
                t = [c["done"] / 1000 for c in cs if c["done"] is not None]
                to = sum(1 for c in cs if c["timeout"])
                if to:
                    problems.append(f"N={n} {m} {kind}: {to} change(s) not seen in time")
                stats[m] = (statistics.median(t), max(t)) if t else None
            p = per.get(kind, [])
            cnt = f"{statistics.median([x[0] for x in p]):.0f} ({min(x[0] for x in p)}-{max(x[0] for x in p)})" if p else "-"
            wall = f"{statistics.median([x[1] for x in p]):.0f}" if p else "-"
            byt = f"{statistics.median([x[2] for x in p]):,.0f} / {max(x[2] for x in p):,}" if p else "-"
            nlc = f"{statistics.median([x[3] for x in p]):.0f} ({min(x[3] for x in p)}-{max(x[3] for x in p)})" if p else "-"
            nlb = f"{statistics.median([x[4] for x in p]):,.0f} / {max(x[4] for x in p):,}" if p else "-"
            mm = lambda st: f"{st[0]:.0f} / {st[1]:.0f}" if st else "n/a"
            r = ratio(stats["on"][0], stats["off"][0]) if stats.get("on") and stats.get("off") else "-"
            print(f"| {int(n):,} | {label} | {mm(stats.get('on'))} | {mm(stats.get('off'))} | {r} | {cnt} | {wall} | {byt} | {nlc} | {nlb} |")
    if "exec" in modes:
        print()
        print("Element changes over nfnetlink (on) against one `nft -f -` run per change "
              "(exec: --nft-element-updates=nft), same boot:")
        print()
        print("| Services | change | on: median / max ms | exec: median / max ms | exec / on "
              "| exec: nft runs per change | exec: nft wall ms per change (median) | exec: nft input bytes (median / max) |")
        print("|---|---|---|---|---|---|---|---|")
        for n in sizes:
            by_on = changes(out, f"{n}_on")
            by_ex = changes(out, f"{n}_exec")
            end_ex = one(res, f"changes_end_us_{n}_exec", int) or 0
            runs = nft_log(out, f"{n}_exec")
            per = {}
            for kind, t0, t1 in windows(by_ex, end_ex):
                rs = [r for r in runs if t0 <= r[0] < t1]
                per.setdefault(kind, []).append(
                    (len(rs), sum(r[1] - r[0] for r in rs) / 1000, sum(r[2] for r in rs)))
            for kind, label in KINDS:
                st = {}
                for m, by in (("on", by_on), ("exec", by_ex)):
                    t = [c["done"] / 1000 for c in by.get(kind, []) if c["done"] is not None]
                    st[m] = (statistics.median(t), max(t)) if t else None
                p = per.get(kind, [])
                mm = lambda x: f"{x[0]:.0f} / {x[1]:.0f}" if x else "n/a"
                r = ratio(st["exec"][0], st["on"][0]) if st["on"] and st["exec"] else "-"
                cnt = f"{statistics.median([x[0] for x in p]):.0f}" if p else "-"
                wall = f"{statistics.median([x[1] for x in p]):.0f}" if p else "-"
                byt = f"{statistics.median([x[2] for x in p]):,.0f} / {max(x[2] for x in p):,}" if p else "-"
                print(f"| {int(n):,} | {label} | {mm(st['on'])} | {mm(st['exec'])} | {r} | {cnt} | {wall} | {byt} |")
    print()
    print("The poller (bench_probe watch): IPVS by one small netlink read per check "
          "every 2 ms; nft only once the IPVS side holds: an exact element by one "
          "nfnetlink GETSETELEM read, a source range by one nfnetlink dump of the small "
          "lb-allowed set, per check every 2 ms (no nft process). For comparison, the "
          "cost of the same checks as `nft` processes, agent idle, per run:")
    for n in sizes:
        g, l = one(res, f"poll_get_us_{n}_on"), one(res, f"poll_list_us_{n}_on")
        ex = [c for cs in changes(out, f"{n}_on").values() for c in cs]
        pe = sum(c["pexecs"] for c in ex)
        pu = sum(c["pus"] for c in ex)
        pg = sum(c["pgets"] for c in ex)
        pgu = sum(c["pgus"] for c in ex)
        print(f"- N={int(n):,}: `nft get element` (service-ports-v4) {fmt(g and g / 1000, '.1f')} ms, "
              f"`nft list set` (lb-allowed-v4) {fmt(l and l / 1000, '.1f')} ms; during the changes "
              f"{pe} poller nft runs, {pu / 1000 / max(len(ex), 1):.0f} ms of them per change on average; "
              f"{pg} netlink element reads, {pgu / max(pg, 1):.0f} us each on average")
    print()
    for n in sizes:
        for m in modes:
            s = f"{n}_{m}"
            ok = one(res, f"state_ok_{s}", int)
            if ok == 0:
                problems.append(f"N={n} {m}: IPVS state after start differs from `ipvs-proxy plan` (see guest.log)")
            ex = one(res, f"agent_exit_{s}", int)
            if ex not in (None, 0):
                problems.append(f"N={n} {m}: agent exit status {ex}")
        cnt = one(res, f"nft_service_ports_{n}_on", int)
        if cnt is not None:
            print(f"N={int(n):,}: service-ports-v4 held {cnt:,} elements at nft complete "
                  f"(expected N + {env.get('CHANGES')} LoadBalancer IPs)")
    for f in res.get("fail", []):
        problems.append(f)
    if problems:
        print()
        print("PROBLEMS:")
        for p in problems:
            print(f"- {p}")


if __name__ == "__main__":
    main()
