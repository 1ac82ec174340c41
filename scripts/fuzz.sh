#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz + libFuzzer) of every decoder that reads
# untrusted bytes; the targets are in fuzz/ (docs/testing.md, "Fuzzing").
#
#   bash scripts/fuzz.sh smoke [SECONDS]   build every target, run each for SECONDS
#                                          (default 5) from its committed corpus;
#                                          fails on a crash, hang, leak of memory
#                                          or a target that does not build or run
#   bash scripts/fuzz.sh run TARGET [LIBFUZZER_ARGS...]
#                                          a campaign at nice 19: corpus in
#                                          fuzz/corpus/TARGET (gitignored), seeded
#                                          from fuzz/seeds/TARGET, crashes in
#                                          fuzz/artifacts/TARGET
#   bash scripts/fuzz.sh merge TARGET      minimize fuzz/corpus/TARGET plus the
#                                          committed seeds into fuzz/seeds/TARGET
#
# Stable Rust only: RUSTC_BOOTSTRAP=1 lets it accept the flags cargo fuzz
# passes. No sanitizer (-s none): our code is safe Rust; an allocation guard
# in fuzz/src/lib.rs and -rss_limit_mb bound memory, -timeout bounds time.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$REPO"

TARGETS=(netlink_replies ipvsadm_rules manifests proxy_config desired_state)
LIMITS=(-rss_limit_mb=2048 -timeout=10 -max_len=65536)
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1
FUZZ_FLAGS=(-O -s none)

ensure_cargo_fuzz() {
  ensure_packages g++ # libfuzzer-sys compiles libFuzzer's C++ sources
  if ! cargo fuzz --version >/dev/null 2>&1; then
    log "cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" >&2
  fi
}

bin_dir() {
  local triple
  triple=$(rustc -vV | sed -n 's/^host: //p')
  echo "$REPO/fuzz/target/$triple/release"
}

build() {
  ensure_cargo_fuzz
  log "cargo fuzz build ${FUZZ_FLAGS[*]} (all targets)"
  cargo fuzz build "${FUZZ_FLAGS[@]}"
}

smoke() {
  local secs="${1:-5}" out="$REPO/.vm/fuzz" bad=0 t rc runs cov
  build
  rm -rf "$out"
  mkdir -p "$out"
  for t in "${TARGETS[@]}"; do
    [ -d "fuzz/seeds/$t" ] || die "fuzz/seeds/$t is missing"
    mkdir -p "$out/$t.corpus"
    set +e
    (cd "$out" && "$(bin_dir)/$t" "${LIMITS[@]}" -max_total_time="$secs" \
      -print_final_stats=1 -artifact_prefix="$out/$t-" \
      "$out/$t.corpus" "$REPO/fuzz/seeds/$t") >"$out/$t.log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$out/$t.log" | tail -1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$out/$t.log" | tail -1)
    if [ "$rc" -ne 0 ] || [ -z "$runs" ]; then
      bad=$((bad + 1))
      printf 'fuzz %s: FAILED (exit %s; log %s)\n' "$t" "$rc" "$out/$t.log"
      tail -n 30 "$out/$t.log" >&2
    else
      printf 'fuzz %s: %s runs in %s s, %s, no crash\n' "$t" "$runs" "$secs" "$cov"
    fi
  done
  [ "$bad" -eq 0 ]
}

run() {
  local t="$1"
  shift
  build
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  cd fuzz
  exec nice -n 19 "$(bin_dir)/$t" "${LIMITS[@]}" -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" "$@" "corpus/$t" "seeds/$t"
}

merge() {
  local t="$1" tmp
  tmp="fuzz/seeds/$t.new"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  nice -n 19 "$(bin_dir)/$t" "${LIMITS[@]}" -merge=1 "$tmp" "fuzz/seeds/$t" "fuzz/corpus/$t"
  rm -rf "fuzz/seeds/$t"
  mv "$tmp" "fuzz/seeds/$t"
}

case "${1:-}" in
  smoke) shift; smoke "$@" ;;
  run) [ $# -ge 2 ] || die "usage: $0 run TARGET [LIBFUZZER_ARGS...]"; shift; run "$@" ;;
  merge) [ $# -eq 2 ] || die "usage: $0 merge TARGET"; merge "$2" ;;
  build) build ;;
  *) die "usage: $0 smoke [SECONDS] | run TARGET [ARGS...] | merge TARGET | build" ;;
esac
