#!/usr/bin/env bash
# IPVS programming benchmark: ipvs-rs (through ipvsctl) against ipvsadm, on a
# real IPVS kernel, all in ONE user-mode-linux boot.
#
#   benches/ipvs/run.sh            # sizes 1000x10 and 10000x10
#   SIZES="1000" benches/ipvs/run.sh
#
# For each size N services x 10 real servers (rules in `ipvsadm -Sn` form;
# the machine may be shared, so each timing is sampled several times and the
# report takes the best sample of each command):
#   restore: ipvsctl restore (batched) | ipvsctl restore --no-batch | ipvsadm -R
#   save:    ipvsctl save vs ipvsadm -Sn (same kernel state)
#   flush:   ipvsctl flush vs ipvsadm -C
# The ip_vs module is reloaded before every measured restore (the kernel's
# dest trash makes adds after a big flush 4-10x slower). After every
# restore the state is checked: `ipvsadm -Sn` must equal the input rules
# (order aside), and both save commands must print identical text.
# Then each command runs once more under `strace -c -f` (separate runs, not
# timed) for syscall counts.
#
# The floor (PARTS contains "floor"): in the same boot, FLOOR_ROUNDS rounds
# (default 5) per size, alternating the order within each round: the
# kernel's own cost of the same adds (benches/floor.rs replay-restore:
# every request encoded before the clock starts, timed only the sendmsg of
# each prebuilt batch and the ACK reads), ipvs-rs's Handle::apply on the
# same operations in one process (floor apply), and `ipvsctl restore` (the
# whole command, with its user and system CPU time); then, on the state
# each restore left, the dump's floor (floor replay-dump: prebuilt
# requests, raw reads), Handle::dump (floor dump) and `ipvsctl save`.
#
# Results: a table on stdout; raw numbers and strace tables in
# .vm/bench-ipvs/ (the repository's gitignored VM directory).
# Env: SIZES (default "1000 10000"), REALS (default 10), STRACE_SIZES
# (default = SIZES), STRACE_IPVSADM_R_MAX (largest N at which `ipvsadm -R`
# runs under strace, default 1000: it takes ~130 s per 1,000 x 10 there),
# RESTORE_SAMPLES (default 3: each restore is timed that many times, each
# on a fresh module; `ipvsadm -R` only once above IPVSADM_R_SAMPLES_MAX
# services, default 1000, as it takes minutes), VM_TIMEOUT (s, default 5400),
# CARGO_TARGET_DIR (must not be under /tmp or /run), PARTS (default
# "compare floor": "compare" is the ipvsctl/ipvsadm comparison and its
# strace pass, "floor" the floor rounds), FLOOR_ROUNDS (default 5).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/lib.sh
. "$here/../../scripts/lib.sh"
cd "$REPO"

SIZES="${SIZES:-1000 10000}"
REALS="${REALS:-10}"
STRACE_SIZES="${STRACE_SIZES:-$SIZES}"
STRACE_IPVSADM_R_MAX="${STRACE_IPVSADM_R_MAX:-1000}"
RESTORE_SAMPLES="${RESTORE_SAMPLES:-3}"
IPVSADM_R_SAMPLES_MAX="${IPVSADM_R_SAMPLES_MAX:-1000}"
PARTS="${PARTS:-compare floor}"
FLOOR_ROUNDS="${FLOOR_ROUNDS:-5}"

ensure_packages user-mode-linux ipvsadm strace iproute2 kmod python3
ensure_rust

log "building ipvsctl (release)"
cargo build --release -p ipvsctl >&2
target_dir="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
ipvsctl="$target_dir/release/ipvsctl"
[ -x "$ipvsctl" ] || die "no $ipvsctl after the build"
case "$ipvsctl" in /tmp/* | /run/*) die "$ipvsctl is under /tmp or /run, hidden in the VM" ;; esac
log "building the floor benchmark (release)"
floor="$(cargo build --release -p ipvs-rs --bench floor --message-format=json |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "floor" and m.get("executable"):
        print(m["executable"])')"
[ -x "$floor" ] || die "no floor benchmark binary after the build"

out="$REPO/.vm/bench-ipvs"
rm -rf "$out"
mkdir -p "$out/rules"
for n in $SIZES; do
  python3 "$here/gen_rules.py" "$n" "$REALS" >"$out/rules/$n.rules"
done
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- ipvs-rs ipvsctl 2>/dev/null)" ]; then rev="$rev+changes"; fi
cat >"$out/bench.env" <<ENV
REVISION=$rev
IPVSCTL=$ipvsctl
SIZES="$SIZES"
REALS=$REALS
STRACE_SIZES="$STRACE_SIZES"
STRACE_IPVSADM_R_MAX=$STRACE_IPVSADM_R_MAX
RESTORE_SAMPLES=$RESTORE_SAMPLES
IPVSADM_R_SAMPLES_MAX=$IPVSADM_R_SAMPLES_MAX
PARTS="$PARTS"
FLOOR=$floor
FLOOR_ROUNDS=$FLOOR_ROUNDS
LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
ENV

log "booting UML for the benchmark (sizes: $SIZES; x $REALS real servers)"
vm_timeout="${VM_TIMEOUT:-5400}"
VM_TIMEOUT="$vm_timeout" VM_TEST_TIMEOUT="$vm_timeout" \
  bash "$REPO/scripts/vm/uml.sh" "$out" "$here/guest.sh" ||
  die "the benchmark VM did not run (logs in $out)"
echo "LOADAVG_END=\"$(cut -d' ' -f1-3 /proc/loadavg)\"" >>"$out/bench.env"
rc="$(cat "$out/payload.rc")"
python3 "$here/report.py" "$out"
[ "$rc" = 0 ] || die "benchmark payload failed (exit $rc): see $out/console.log and $out/guest.log"
