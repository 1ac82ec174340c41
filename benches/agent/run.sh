#!/usr/bin/env bash
# The agent against kube-proxy's IPVS mode: `ipvs-proxy --manifests DIR` on a
# real IPVS kernel, all sizes in ONE user-mode-linux boot.
#
#   benches/agent/run.sh              # N = 100 1000 3000 Services x 10 endpoints
#   benches/agent/run.sh 3000         # one size
#
# Per size (see guest.sh): time from the agent's start to the complete IPVS
# state (polled with dataplane/examples/bench_probe.rs: one small IPVS read
# per poll, not a dump); the state then compared, once, with `ipvs-proxy
# plan` (full `ipvsadm -Sn`); CHANGES EndpointSlice changes (one endpoint
# address replaced, by an atomic rename of the Service's manifest) timed to
# the moment the kernel shows the new real server and not the old one; the
# agent's VmRSS, VmHWM and CPU time. Endpoints are all on other nodes. The
# UML kernel has no nftables: the agent runs with `--packet-filter none`.
#
# Results: a table with ratios to kube-proxy v1.30.3 (measured on the same
# UML kernel, /work/shared/notes/anchors.md) on stdout and in
# .vm/bench-agent/report.txt; raw numbers in .vm/bench-agent/results.txt.
# Env: REALS (default 10), CHANGES (default 12), REPEAT (default 3: each
# size measured that many times, each on a fresh module and a fresh agent;
# the table shows medians), UML_MEM (default 2048M),
# VM_TIMEOUT (s, default 3600), CARGO_TARGET_DIR (not under /tmp or /run),
# BENCH_OUT (results directory, default .vm/bench-agent; absolute, not under
# /tmp or /run). For diagnosis: AGENT_ENV (extra environment for the agent,
# e.g. "RUST_LOG=warn"), STRACE=1 (the agent runs under `strace -f -c`:
# syscall counts in BENCH_OUT/strace-N-RUN.txt; its times are then not
# comparable with plain runs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/lib.sh
. "$here/../../scripts/lib.sh"
cd "$REPO"

SIZES="${*:-100 1000 3000}"
REALS="${REALS:-10}"
CHANGES="${CHANGES:-12}"
REPEAT="${REPEAT:-3}"
for n in $SIZES; do
  case "$n" in '' | *[!0-9]*) die "sizes must be numbers (got $n)" ;; esac
  [ "$n" -le 62500 ] || die "at most 62500 Services (one /12 of cluster IPs)"
done

ensure_packages user-mode-linux ipvsadm iproute2 kmod python3
ensure_rust

log "building ipvs-proxy and bench_probe (release)"
cargo build --release -p ipvs-proxy --bin ipvs-proxy >&2
cargo build --release -p dataplane --example bench_probe >&2
target_dir="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
agent="$target_dir/release/ipvs-proxy"
probe="$target_dir/release/examples/bench_probe"
for b in "$agent" "$probe"; do
  [ -x "$b" ] || die "no $b after the build"
  case "$b" in /tmp/* | /run/*) die "$b is under /tmp or /run, hidden in the VM" ;; esac
done

out="${BENCH_OUT:-$REPO/.vm/bench-agent}"
vm_check_outdir "$out"
rm -rf "$out"
mkdir -p "$out/data"
for n in $SIZES; do
  d="$out/data/$n"
  python3 "$here/gen_manifests.py" "$n" "$REALS" "$CHANGES" "$d"
  awk '/^  clusterIP: / { print $2 ":80" }' "$d"/manifests/*.yaml >"$d/keys.txt"
  [ "$(wc -l <"$d/keys.txt")" = "$n" ] || die "expected $n cluster IPs in $d/keys.txt"
  # What the kernel must hold once the agent is done (host side: plan
  # touches nothing).
  "$agent" plan --manifests "$d/manifests" --node-name bench-node --node-ip 10.0.2.15 \
    2>"$d/plan.stderr" | grep -v '^#' | sort >"$d/plan.sorted"
  [ -s "$d/plan.stderr" ] && die "plan rejected objects: $(head -3 "$d/plan.stderr")"
  [ "$(wc -l <"$d/plan.sorted")" = $((n * (REALS + 1))) ] ||
    die "plan for N=$n has $(wc -l <"$d/plan.sorted") lines, expected $((n * (REALS + 1)))"
done
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- ipvs-rs proxy-core dataplane agent 2>/dev/null)" ]; then rev="$rev+changes"; fi
cat >"$out/bench.env" <<ENV
REVISION=$rev
DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
AGENT=$agent
PROBE=$probe
SIZES="$SIZES"
REALS=$REALS
CHANGES=$CHANGES
REPEAT=$REPEAT
COMPLETE_TIMEOUT=600
CHANGE_TIMEOUT=60
AGENT_ENV="${AGENT_ENV:-}"
STRACE=${STRACE:-0}
ENV

log "booting UML for the agent benchmark (sizes: $SIZES; x $REALS endpoints; $CHANGES changes each)"
vm_timeout="${VM_TIMEOUT:-3600}"
# UML is one host process: other load on the host slows the guest and
# inflates its CPU accounting. Recorded with the results.
echo "before $(cut -d' ' -f1-3 /proc/loadavg)" >"$out/host_load.txt"
VM_TIMEOUT="$vm_timeout" VM_TEST_TIMEOUT="$vm_timeout" \
  bash "$REPO/scripts/vm/uml.sh" "$out" "$here/guest.sh" ||
  die "the benchmark VM did not run (logs in $out)"
echo "after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/host_load.txt"
rc="$(cat "$out/payload.rc")"
python3 "$here/report.py" "$out" | tee "$out/report.txt"
[ "$rc" = 0 ] || die "benchmark payload failed (exit $rc): see $out/console.log and $out/guest.log"
