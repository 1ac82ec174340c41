#!/usr/bin/env bash
# Boot user-mode-linux once, with the host's "/" as the guest's root (hostfs),
# run PAYLOAD inside (see guest-init.sh), power off.
#
#   scripts/vm/uml.sh OUTDIR PAYLOAD [PAYLOAD_ARGS]
#
# OUTDIR must be an absolute host path outside /tmp and /run (the guest mounts
# fresh tmpfs there). Files the payload needs (e.g. OUTDIR/tests.list) are
# put in OUTDIR beforehand by the caller; OUTDIR/status etc. are kept.
# Exit status: 0 when the guest booted, ran the payload and powered off (read
# OUTDIR/payload.rc for the payload's result); 1 when the VM failed, with the
# reason on stderr. Env: VM_TIMEOUT (s, default 1800), UML_MEM (default 2048M).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/../lib.sh"

[ $# -ge 2 ] || die "usage: $0 OUTDIR PAYLOAD [PAYLOAD_ARGS]"
out="$1" payload="$2" payload_args="${3:-}"
case "$out" in
  /tmp | /tmp/* | /run | /run/*) die "OUTDIR $out is hidden inside the guest (tmpfs)" ;;
  /*) ;;
  *) die "OUTDIR must be absolute: $out" ;;
esac

uml=/usr/bin/linux.uml
[ -x "$uml" ] || die "UML kernel $uml not found (apt-get install user-mode-linux)"
modules=/usr/lib/uml/modules
[ -d "$modules" ] || die "UML modules $modules not found (user-mode-linux package)"

mkdir -p "$out"
rm -f "$out/status" "$out/payload.rc" "$out/boot_uptime" "$out/modules.txt" "$out/setup.log"
cat >"$out/job.env" <<EOF
VM_KIND=uml
VM_OUT=$out
VM_MODULES=$modules
VM_PAYLOAD=$payload
VM_PAYLOAD_ARGS="$payload_args"
VM_TEST_TIMEOUT=${VM_TEST_TIMEOUT:-1200}
EOF

timeout_s="${VM_TIMEOUT:-1800}"
console="$out/console.log"
start=$(now)
# setsid: UML runs one host process per guest address space; a new session
# lets us kill all of them if the guest hangs.
setsid "$uml" mem="${UML_MEM:-2048M}" root=/dev/root rootfstype=hostfs rootflags=/ rw quiet \
  init="$REPO/scripts/vm/guest-init.sh" vmjob="$out/job.env" \
  con=null con0=fd:0,fd:1 </dev/null >"$console" 2>&1 &
pid=$!
# Show the console live, without carriage returns and terminal escapes.
tail -n +1 -f "$console" --pid="$pid" 2>/dev/null |
  sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' &
tailpid=$!

timed_out=0
deadline=$(($(date +%s) + timeout_s))
while kill -0 "$pid" 2>/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    timed_out=1
    warn "UML still running after ${timeout_s}s: killing it"
    kill -TERM -- "-$pid" 2>/dev/null || true
    sleep 5
    kill -KILL -- "-$pid" 2>/dev/null || true
    break
  fi
  sleep 1
done
wait "$pid" 2>/dev/null || true
# Stray UML helper processes left in the session after a crash.
kill -KILL -- "-$pid" 2>/dev/null || true
wait "$tailpid" 2>/dev/null || true
echo "$(elapsed "$start")" >"$out/wall_seconds"

if [ "$timed_out" -eq 1 ]; then
  die "UML timed out after ${timeout_s}s (console: $console)"
fi
if [ ! -f "$out/status" ]; then
  tail -n 30 "$console" >&2 || true
  die "UML did not start or crashed before the guest finished (no $out/status; console: $console)"
fi
if [ "$(cat "$out/status")" != done ]; then
  cat "$out/setup.log" >&2 || true
  die "UML guest setup failed: $(cat "$out/status") (see $out/setup.log, $out/modules.txt)"
fi
exit 0
