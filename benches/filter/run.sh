#!/usr/bin/env bash
# The agent with its packet filter (nftables) on, against the same agent with
# `--packet-filter none` as the control: `ipvs-proxy --manifests DIR` on the
# qemu guest's full kernel (the e2e tests' harness, scripts/vm/qemu.sh), all
# sizes and both modes in ONE boot.
#
#   bash benches/filter/run.sh                 # N = 1000 3000 10000 Services x 10 endpoints
#   bash benches/filter/run.sh 1000            # one size (quick: CHANGES=3 too)
#
# Per size and mode (filter on, then off; see guest.sh): time from the
# agent's start to the complete IPVS state (bench_probe complete) and, filter
# on, to the complete nft table (bench_probe watch: the first and last
# Service's element and a LoadBalancer source range, then one count of the
# whole service-ports set); CHANGES single changes of each kind (one endpoint
# address replaced, one Service added, one deleted, one NodePort Service
# added, one loadBalancerSourceRanges change), each timed from the rename
# (or unlink) of its manifest to the kernel showing it in IPVS AND in nft;
# per change the agent's nft executions (a logging wrapper named `nft` first
# on the agent's PATH: count, wall time, stdin bytes); the agent's VmHWM and
# CPU time. The agent runs with --ipvs-sync-period=1h so that no periodic
# full sync falls into a change's window.
#
# Results: a table with filter-on / filter-off ratios on stdout and in
# .vm/bench-filter/report.txt; raw numbers in .vm/bench-filter/results.txt,
# per-change lines in changes-N-MODE.txt, the nft log in nft-N-on.log, the
# agent's logs in agent-N-MODE.log.
# Env: REALS (default 10), CHANGES (per kind, default 10; N >= 8 x CHANGES),
# MODES (default "on off"; "exec" adds the filter on with every element
# change through an `nft -f -` run, --nft-element-updates=nft), QEMU_MEM (MiB, default 3072), QEMU_SMP (2),
# VM_TIMEOUT (s, default 7200), BENCH_OUT (absolute, not under /tmp or /run;
# default .vm/bench-filter), CARGO_TARGET_DIR (not under /tmp or /run),
# CHANGE_TIMEOUT (s per change, default 90), AGENT_ENV (extra environment for the agent, e.g. "RUST_LOG=warn").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/lib.sh
. "$here/../../scripts/lib.sh"
cd "$REPO"

SIZES="${*:-1000 3000 10000}"
REALS="${REALS:-10}"
CHANGES="${CHANGES:-10}"
MODES="${MODES:-on off}"
for n in $SIZES; do
  case "$n" in '' | *[!0-9]*) die "sizes must be numbers (got $n)" ;; esac
  [ "$n" -le 62000 ] || die "at most 62000 Services (one /12 of cluster IPs, with the added ones)"
  [ "$n" -ge $((8 * CHANGES)) ] || die "N=$n: needs N >= 8 x CHANGES ($CHANGES)"
done
for m in $MODES; do
  case "$m" in on | off | exec) ;; *) die "MODES: on, off and/or exec (got $m)" ;; esac
done

ensure_packages qemu-system-x86 busybox-static ipvsadm nftables iproute2 kmod python3 curl
ensure_rust

log "building ipvs-proxy and bench_probe (release)"
nice -n 10 cargo build --release -p ipvs-proxy --bin ipvs-proxy >&2
nice -n 10 cargo build --release -p dataplane --example bench_probe >&2
target_dir="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
agent="$target_dir/release/ipvs-proxy"
probe="$target_dir/release/examples/bench_probe"
for b in "$agent" "$probe"; do
  [ -x "$b" ] || die "no $b after the build"
  case "$b" in /tmp/* | /run/*) die "$b is under /tmp or /run, hidden in the VM" ;; esac
done
real_nft="$(command -v nft)" || die "no nft binary (apt-get install nftables)"

out="${BENCH_OUT:-$REPO/.vm/bench-filter}"
vm_check_outdir "$out"
rm -rf "$out"
mkdir -p "$out/data" "$out/bin"
# The agent's `nft`: bench_probe under that name logs each run, then runs the real one.
ln -s "$probe" "$out/bin/nft"
for n in $SIZES; do
  d="$out/data/$n"
  python3 "$REPO/benches/agent/gen_manifests.py" --filter "$n" "$REALS" "$CHANGES" "$d"
  awk '/^  clusterIP: / { print $2 ":80" }' "$d"/manifests/*.yaml >"$d/keys.txt"
  [ "$(wc -l <"$d/keys.txt")" = "$n" ] || die "expected $n cluster IPs in $d/keys.txt"
  [ "$(wc -l <"$d/filter-changes.txt")" = $((5 * CHANGES)) ] || die "expected $((5 * CHANGES)) changes for N=$n"
  "$agent" plan --manifests "$d/manifests" --node-name bench-node --node-ip 10.0.2.15 \
    2>"$d/plan.stderr" | grep -v '^#' | sort >"$d/plan.sorted"
  [ -s "$d/plan.stderr" ] && die "plan rejected objects: $(head -3 "$d/plan.stderr")"
done
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- ipvs-rs proxy-core dataplane agent 2>/dev/null)" ]; then rev="$rev+changes"; fi
cat >"$out/bench.env" <<ENV
REVISION=$rev
DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
AGENT=$agent
PROBE=$probe
REAL_NFT=$real_nft
SIZES="$SIZES"
MODES="$MODES"
REALS=$REALS
CHANGES=$CHANGES
COMPLETE_TIMEOUT=1800
CHANGE_TIMEOUT=${CHANGE_TIMEOUT:-90}
AGENT_ENV="${AGENT_ENV:-}"
ENV

log "booting qemu for the filter benchmark (sizes: $SIZES; modes: $MODES; x $REALS endpoints; $CHANGES changes of each kind)"
echo "before $(cut -d' ' -f1-3 /proc/loadavg)" >"$out/host_load.txt"
QEMU_MEM="${QEMU_MEM:-3072}" VM_TIMEOUT="${VM_TIMEOUT:-7200}" \
  bash "$REPO/scripts/vm/qemu.sh" "$out" "$here/guest.sh" ||
  die "the benchmark VM did not run (logs in $out)"
echo "after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/host_load.txt"
rc="$(cat "$out/payload.rc")"
python3 "$here/report.py" "$out" | tee "$out/report.txt"
[ "$rc" = 0 ] || die "benchmark payload failed (exit $rc): see $out/guest.log"
