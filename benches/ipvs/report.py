#!/usr/bin/env python3
"""Print the IPVS benchmark table from a results directory (see run.sh)."""
import os
import sys


def load(out):
    res = {}
    with open(os.path.join(out, "results.txt")) as f:
        for line in f:
            key, _, val = line.rstrip("\n").partition(" ")
            res.setdefault(key, []).append(val)
    with open(os.path.join(out, "bench.env")) as f:
        env = dict(l.strip().split("=", 1) for l in f if "=" in l)
    return res, env


def strace_summary(out, key):
    """(total calls, [(syscall, calls), ...] top 4) from a strace -c table."""
    path = os.path.join(out, "strace", key + ".txt")
    if not os.path.exists(path):
        return None
    rows, total = [], None
    for line in open(path):
        f = line.split()
        if len(f) < 5 or not f[0].replace(".", "").isdigit():
            continue
        name = f[-1]
        try:
            calls = int(f[3])
        except ValueError:
            continue
        if name == "total":
            total = calls
        else:
            rows.append((name, calls))
    rows.sort(key=lambda r: -r[1])
    return total, rows[:4]


def fmt_strace(s):
    if s is None:
        return "-"
    total, top = s
    return f"{total:,} ({', '.join(f'{n} {c:,}' for n, c in top)})"


def stats(v):
    """(median, min) of a list of numbers."""
    v = sorted(v)
    m = len(v) // 2
    med = v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2
    return med, v[0]


def floor_report(res, env, reals):
    """The floor rounds (PARTS contains floor): ours against the kernel's own cost."""
    if "floor" not in env.get("PARTS", "").strip('"').split():
        return
    num = lambda k: [int(v) for v in res.get(k, [])]
    print(f"\n== floor: ours against the kernel's own cost ({env.get('FLOOR_ROUNDS', '?')} rounds, "
          f"order rotated; host load average at start {env.get('LOADAVG_START', '?').strip(chr(34))}, "
          f"at end {env.get('LOADAVG_END', '?').strip(chr(34))}) ==")
    for n in env.get("SIZES", "").strip('"').split():
        adds = int(n) * (reals + 1)
        rows = [
            ("restore floor (replay)", f"replay_restore_us_{n}", f"replay_restore_user_us_{n}", f"replay_restore_sys_us_{n}", f"replay_restore_faults_{n}"),
            ("restore Handle::apply", f"apply_us_{n}", f"apply_user_us_{n}", f"apply_sys_us_{n}", f"apply_faults_{n}"),
            ("restore ipvsctl restore", f"floor_ipvsctl_restore_{n}", f"floor_ipvsctl_restore_{n}_user", f"floor_ipvsctl_restore_{n}_sys", None),
            ("dump floor (replay)", f"replay_dump_us_{n}", f"replay_dump_user_us_{n}", f"replay_dump_sys_us_{n}", f"replay_dump_faults_{n}"),
            ("dump Handle::dump", f"dump_us_{n}", f"dump_user_us_{n}", f"dump_sys_us_{n}", f"dump_faults_{n}"),
            ("dump Handle::dump_each", f"dump_each_us_{n}", f"dump_each_user_us_{n}", f"dump_each_sys_us_{n}", f"dump_each_faults_{n}"),
            ("dump ipvsctl save", f"floor_ipvsctl_save_{n}", f"floor_ipvsctl_save_{n}_user", f"floor_ipvsctl_save_{n}_sys", None),
        ]
        print(f"\n-- {int(n):,} x {reals} ({adds:,} adds) --")
        print(f"{'':<26} {'n':>3} {'median s':>9} {'min s':>9} {'us/add':>8} {'user s':>8} {'sys s':>8} {'faults':>7}  (user/sys/faults: medians)")
        t = {}
        for label, k, ku, ks, kf in rows:
            v = num(k)
            if not v:
                continue
            t[label] = v
            med, mn = stats(v)
            u = stats(num(ku))[0] / 1e6 if num(ku) else float("nan")
            sy = stats(num(ks))[0] / 1e6 if num(ks) else float("nan")
            fl = f"{stats(num(kf))[0]:>7.0f}" if kf and num(kf) else f"{'-':>7}"
            print(f"{label:<26} {len(v):>3} {med / 1e6:>9.3f} {mn / 1e6:>9.3f} {med / adds:>8.1f} {u:>8.3f} {sy:>8.3f} {fl}")
        def ratio(a, b):
            if a not in t or b not in t:
                return "-"
            pairs = [x / y for x, y in zip(t[a], t[b]) if y]
            pm, pmin = stats(pairs)
            return (f"{pm:.2f}x median of {len(pairs)} paired samples (min {pmin:.2f}x); "
                    f"min/min {min(t[a]) / min(t[b]):.2f}x")
        print(f"ours / floor: Handle::apply / replay  = {ratio('restore Handle::apply', 'restore floor (replay)')}")
        print(f"              ipvsctl restore / replay = {ratio('restore ipvsctl restore', 'restore floor (replay)')}")
        print(f"              Handle::dump / replay    = {ratio('dump Handle::dump', 'dump floor (replay)')}")
        print(f"              Handle::dump_each / replay = {ratio('dump Handle::dump_each', 'dump floor (replay)')}")
        print(f"              ipvsctl save / replay    = {ratio('dump ipvsctl save', 'dump floor (replay)')}")
        b = res.get(f"replay_restore_batches_{n}")
        if b:
            print(f"batches per restore: {b[0]}")


def main():
    out = sys.argv[1]
    res, env = load(out)
    reals = int(env.get("REALS", "10"))
    us = lambda k: [int(v) for v in res.get(k, [])]
    print()
    print(f"IPVS benchmark, kernel {res.get('kernel', ['?'])[0]} (UML), "
          f"N services x {reals} real servers, fresh ip_vs module per restore; "
          f"times are the best of the samples, ratios compare best samples; "
          f"revision {env.get('REVISION', '?')}")
    parts = env.get("PARTS", "compare").strip('"').split()
    for n in (env.get("SIZES", "").strip('"').split() if "compare" in parts else []):
        n_i = int(n)
        adds = n_i * (reals + 1)
        print(f"\n== {n_i:,} x {reals} ({adds:,} adds) ==")
        print(f"{'operation':<34} {'best (s)':>10} {'per add (us)':>13}  syscalls (strace -c -f: total, top)")
        rows = [
            ("restore: ipvsctl restore (batched)", "restore_batched"),
            ("restore: ipvsctl restore --no-batch", "restore_unbatched"),
            ("restore: ipvsadm -R", "restore_ipvsadm"),
        ]
        t = {}
        for label, key in rows:
            v = us(f"{key}_{n}")
            if not v:
                continue
            t[key] = min(v)
            samples = " / ".join(f"{x / 1e6:.3f}" for x in v)
            print(f"{label:<34} {t[key] / 1e6:>10.3f} {t[key] / adds:>13.1f}  "
                  f"{fmt_strace(strace_summary(out, f'{key}_{n}'))}")
            if len(v) > 1:
                print(f"{'':<36}samples: {samples}")
        for label, keys, skey in [
            ("save: ipvsctl save", ["save_ipvsctl", "save2_ipvsctl"], "save_ipvsctl"),
            ("save: ipvsadm -Sn", ["save_ipvsadm", "save2_ipvsadm"], "save_ipvsadm"),
            ("flush: ipvsctl flush", ["flush_ipvsctl", "flush2_ipvsctl"], "flush_ipvsctl"),
            ("flush: ipvsadm -C", ["flush_ipvsadm"], "flush_ipvsadm"),
        ]:
            v = [x for k in keys for x in us(f"{k}_{n}")]
            if not v:
                continue
            t[skey] = min(v)
            samples = " / ".join(f"{x / 1e6:.3f}" for x in v)
            print(f"{label:<34} {t[skey] / 1e6:>10.3f} {'':>13}  "
                  f"{fmt_strace(strace_summary(out, f'{skey}_{n}'))}")
            if len(v) > 1:
                print(f"{'':<36}samples: {samples}")
        def ratio(a, b):
            return f"{t[a] / t[b]:.1f}x" if a in t and b in t and t[b] else "-"
        print(f"ratios: ipvsadm -R / batched restore = {ratio('restore_ipvsadm', 'restore_batched')}"
              f" (target >= 10x); ipvsadm -R / --no-batch = {ratio('restore_ipvsadm', 'restore_unbatched')};"
              f" --no-batch / batched = {ratio('restore_unbatched', 'restore_batched')}")
        print(f"        ipvsadm -Sn / ipvsctl save = {ratio('save_ipvsadm', 'save_ipvsctl')} (target >= 1.5x);"
              f" ipvsadm -C / ipvsctl flush = {ratio('flush_ipvsadm', 'flush_ipvsctl')}")
        checks = {k: v for k, v in res.items() if k.endswith(f"_{n}") and
                  (k.startswith("state_ok") or k.startswith("empty_ok") or k.startswith("save_identical"))}
        good = all(x == "1" for v in checks.values() for x in v)
        nchecks = sum(len(v) for v in checks.values())
        print(f"state checks: {'all identical' if good and checks else 'MISMATCH: ' + str(checks)}"
              f" ({nchecks} checks: kernel state == rules after each restore, "
              f"ipvsctl save == ipvsadm -Sn byte for byte, empty after each flush)")
    floor_report(res, env, reals)
    if "fail" in res:
        print("\nFAILURES:\n  " + "\n  ".join(res["fail"]))


if __name__ == "__main__":
    main()
