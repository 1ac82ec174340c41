#!/usr/bin/env bash
# A/B of `ipvsctl save` between two ipvsctl binaries in ONE UML boot: the
# table is restored once (N x 10, with NEW), then the two binaries save it
# in turn (old first in odd rounds, new first in even ones), ROUNDS times
# each, and each runs once more under `strace -c -f`. For a suspected
# regression of the dump path:
# the pairs share the kernel state and the host's load of the moment.
#
#   benches/ipvs/ab_save.sh OLD_IPVSCTL NEW_IPVSCTL [N] [ROUNDS]
#
# Build the old binary from a git archive of the old revision with its own
# CARGO_TARGET_DIR (both binaries must be outside /tmp and /run). Results:
# .vm/ab-save/results.txt (save_OLD/NEW wall us, cpu_OLD/NEW user sys s),
# strace_OLD.txt / strace_NEW.txt; a summary on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/lib.sh
. "$here/../../scripts/lib.sh"
cd "$REPO"
[ $# -ge 2 ] || die "usage: $0 OLD_IPVSCTL NEW_IPVSCTL [N] [ROUNDS]"
old="$(realpath "$1")" new="$(realpath "$2")" n="${3:-10000}" rounds="${4:-10}"
for b in "$old" "$new"; do
  [ -x "$b" ] || die "$b is not executable"
  case "$b" in /tmp/* | /run/*) die "$b is under /tmp or /run, hidden in the VM" ;; esac
done
ensure_packages user-mode-linux ipvsadm strace python3
out="$REPO/.vm/ab-save"
rm -rf "$out"
mkdir -p "$out"
python3 "$here/gen_rules.py" "$n" 10 >"$out/rules"
printf 'OLD=%s\nNEW=%s\nRULES=%s\nROUNDS=%s\n' "$old" "$new" "$out/rules" "$rounds" >"$out/ab.env"
VM_TIMEOUT="${VM_TIMEOUT:-1800}" bash "$REPO/scripts/vm/uml.sh" "$out" "$here/ab_save_guest.sh" ||
  die "the VM did not run (logs in $out)"
python3 - "$out" <<'PY'
import statistics, sys
out = sys.argv[1]
wall, cpu, lines = {"OLD": [], "NEW": []}, {"OLD": [], "NEW": []}, {}
for l in open(f"{out}/results.txt"):
    p = l.split()
    if p[0].startswith("save_"):
        wall[p[0][5:]].append(int(p[1]) / 1e6)
    elif p[0].startswith("cpu_"):
        cpu[p[0][4:]].append(float(p[1]) + float(p[2]))
    else:
        lines[p[0]] = p[1]
print(f"table: {lines.get('lines')} lines; same output: {lines.get('same_output')}")
for b in ("OLD", "NEW"):
    w = wall[b]
    print(f"{b}: save median {statistics.median(w):.3f} s, min {min(w):.3f}, max {max(w):.3f} "
          f"({len(w)} runs); cpu median {statistics.median(cpu[b]):.3f} s")
print("syscalls: see", f"{out}/strace_OLD.txt", f"{out}/strace_NEW.txt")
PY
