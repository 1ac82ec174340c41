#!/bin/bash
# Guest payload: run every test binary listed in $VM_OUT/tests.list, one after
# the other, each with --test-threads=1, as root.
# tests.list lines: ID<TAB>EXECUTABLE<TAB>PACKAGE_DIR  (written by scripts/test.sh)
# Per binary: $VM_OUT/tests/ID.log (its output) and $VM_OUT/tests/ID.rc.
# Exit status: 0 when every binary exited 0.
set -u

list="$VM_OUT/tests.list"
timeout_s="${VM_TEST_TIMEOUT:-1200}"
mkdir -p "$VM_OUT/tests"
export RUST_BACKTRACE=1

status=0
while IFS=$'\t' read -r id exe dir; do
  [ -n "$id" ] || continue
  echo "--- [$VM_KIND] running $id"
  start=$(date +%s)
  # The package directory is the working directory and CARGO_MANIFEST_DIR,
  # as under `cargo test`.
  (cd "$dir" && CARGO_MANIFEST_DIR="$dir" \
    timeout -k 10 "$timeout_s" "$exe" --test-threads=1) \
    >"$VM_OUT/tests/$id.log" 2>&1 </dev/null
  rc=$?
  echo "$rc" >"$VM_OUT/tests/$id.rc"
  cat "$VM_OUT/tests/$id.log"
  [ "$rc" -eq 124 ] && echo "--- [$VM_KIND] $id TIMED OUT after ${timeout_s}s"
  echo "--- [$VM_KIND] $id exit $rc in $(($(date +%s) - start))s"
  [ "$rc" -eq 0 ] || status=1
done <"$list"
exit "$status"
