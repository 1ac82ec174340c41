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

# User processes other than us and PID 1 (kernel threads have no cmdline).
leftovers() {
  local p pid cmd
  for p in /proc/[0-9]*; do
    pid="${p#/proc/}"
    [ "$pid" = 1 ] || [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ] && continue
    cmd="$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" || continue
    [ -n "$cmd" ] && echo "$pid $cmd"
  done
}

status=0
while IFS=$'\t' read -r id exe dir; do
  [ -n "$id" ] || continue
  echo "--- [$VM_KIND] running $id"
  start=$(date +%s)
  log="$VM_OUT/tests/$id.log"
  : >"$log"
  # The package directory is the working directory and CARGO_MANIFEST_DIR, as
  # under `cargo test`. Output goes to the log and, live, to the console (a
  # file, not a pipe: a server a test leaves behind cannot block us).
  (cd "$dir" && CARGO_MANIFEST_DIR="$dir" exec timeout -k 10 "$timeout_s" \
    "$exe" --test-threads=1) </dev/null >"$log" 2>&1 &
  pid=$!
  tail -n +1 -f --pid="$pid" "$log" &
  tailpid=$!
  wait "$pid"
  rc=$?
  wait "$tailpid"
  echo "$rc" >"$VM_OUT/tests/$id.rc"
  [ "$rc" -eq 124 ] && echo "--- [$VM_KIND] $id TIMED OUT after ${timeout_s}s"
  echo "--- [$VM_KIND] $id exit $rc in $(($(date +%s) - start))s"
  [ "$rc" -eq 0 ] || status=1
  # Each binary starts from a clean process table.
  left="$(leftovers)"
  if [ -n "$left" ] && [ "$PPID" = 1 ]; then # never outside a test VM
    echo "--- [$VM_KIND] $id left processes running; killing them:"
    echo "$left"
    kill -KILL -1 2>/dev/null
    sleep 1
  fi
done <"$list"
exit "$status"
