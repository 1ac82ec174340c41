#!/usr/bin/env bash
# The agent's memory: peak and steady RSS and a heap profile at N Services
# x 10 endpoints, from manifests and in cluster mode, on the host.
#
#   bash benches/memory/run.sh                 # N = 10 (the base), 1,000, 3,000, 10,000; both modes
#   SIZES="3000" MODES=cluster bash benches/memory/run.sh
#
# Per size and mode (benches/memory/bench.py): `ipvs-proxy --dry-run` (the
# in-memory kernel model, so no kernel, VM or root is needed; the packet
# filter is on, as by default, but no nft runs) reads the manifests of
# benches/agent/gen_manifests.py, or watches benches/memory/apiserver.py, an
# API server stand-in that serves the same objects as a real one does after
# `kubectl apply` (managedFields, last-applied annotation, server defaults)
# with paged lists (`limit`/`continue`) and chunked watch streams. Measured:
# time to the complete state, VmHWM (peak) and VmRSS (steady, 2 s after
# complete) from /proc, CHANGES endpoint changes one at a time (latency to
# the agent's log line; RSS sampled every CHANGES/10), and, with DHAT=1
# (default), a second run of the agent built with `--features dhat-heap`
# (dhat-rs) whose profile is summarised by dhat_top.py: the heap at its
# peak by category and the top sites.
#
# Env: SIZES (default "10 1000 3000 10000"), MODES (default "manifests
# cluster"), REALS (10), CHANGES (1000), DHAT (1; 0 skips the profiles),
# DHAT_CHANGES (20: changes in the profiled run, which is slow),
# BENCH_OUT (default .bench/memory), AGENT / AGENT_DHAT (use these binaries
# instead of building them: for before/after comparisons), DHAT_REV (the git
# revision AGENT_DHAT was built from, when not the work tree: dhat_top.py
# reads source lines to name the sites).
# Results: BENCH_OUT/report.md (also on stdout); per run
# BENCH_OUT/MODE-N/result.json, agent.log, dhat-heap.json, dhat-top.md.
# Memory figures do not depend on the host's load; the times do (the load
# average is recorded per run).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

SIZES="${SIZES:-10 1000 3000 10000}"
MODES="${MODES:-manifests cluster}"
REALS="${REALS:-10}"
CHANGES="${CHANGES:-1000}"
DHAT="${DHAT:-1}"
DHAT_CHANGES="${DHAT_CHANGES:-20}"
out="${BENCH_OUT:-$repo/.bench/memory}"
mkdir -p "$out/bin"

target_dir="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
if [ -z "${AGENT:-}" ]; then
  echo "building ipvs-proxy (release)" >&2
  cargo build --release -p ipvs-proxy --bin ipvs-proxy >&2
  cp "$target_dir/release/ipvs-proxy" "$out/bin/ipvs-proxy"
  AGENT="$out/bin/ipvs-proxy"
fi
if [ "$DHAT" = 1 ] && [ -z "${AGENT_DHAT:-}" ]; then
  echo "building ipvs-proxy with dhat-heap (release)" >&2
  cargo build --release -p ipvs-proxy --bin ipvs-proxy --features dhat-heap >&2
  cp "$target_dir/release/ipvs-proxy" "$out/bin/ipvs-proxy-dhat"
  AGENT_DHAT="$out/bin/ipvs-proxy-dhat"
fi
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- proxy-core dataplane agent 2>/dev/null)" ]; then rev="$rev+changes"; fi
{
  echo "revision $rev"
  echo "date $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "host $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "agent $AGENT"
} >"$out/run.txt"

for mode in $MODES; do
  for n in $SIZES; do
    d="$out/$mode-$n"
    rm -rf "$d"
    mkdir -p "$d"
    echo "== $mode N=$n: RSS and times ($CHANGES changes)" >&2
    python3 "$here/bench.py" "$AGENT" "$mode" "$n" "$REALS" "$CHANGES" "$d" >"$d/bench.out"
    if [ "$DHAT" = 1 ]; then
      echo "== $mode N=$n: heap profile (dhat, $DHAT_CHANGES changes)" >&2
      mkdir -p "$d/dhat"
      # Fresh manifests (the run above changed its copy).
      python3 "$here/bench.py" "$AGENT_DHAT" "$mode" "$n" "$REALS" "$DHAT_CHANGES" "$d/dhat" --dhat >"$d/dhat/bench.out"
      rm -rf "$d/dhat/manifests"
      python3 "$here/dhat_top.py" "$d/dhat/dhat-heap.json" 15 ${DHAT_REV:+--rev "$DHAT_REV"} >"$d/dhat-top.md"
    fi
    rm -rf "$d/manifests"
  done
done
python3 "$here/report.py" "$out" | tee "$out/report.md"
