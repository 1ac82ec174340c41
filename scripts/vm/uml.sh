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
out="$1"
vm_check_outdir "$out"

uml=/usr/bin/linux.uml
[ -x "$uml" ] || die "UML kernel $uml not found (apt-get install user-mode-linux)"
modules=/usr/lib/uml/modules
[ -d "$modules" ] || die "UML modules $modules not found (user-mode-linux package)"

# UML's memory is a sparse file in $TMPDIR; in containers /dev/shm is often
# tiny (64M), and touching memory past its end kills the VM. Pick a place
# with room for all of it.
mem="${UML_MEM:-2048M}"
case "$mem" in
  *[gG]) mem_mb=$((${mem%?} * 1024)) ;;
  *[mM]) mem_mb=${mem%?} ;;
  *) die "UML_MEM must look like 2048M or 2G (got $mem)" ;;
esac
uml_tmp=""
for d in "${TMPDIR:-}" /dev/shm /tmp "$REPO/.vm"; do
  if [ -z "$d" ] || [ ! -d "$d" ] || [ ! -w "$d" ]; then continue; fi
  avail_mb=$(($(df -Pk "$d" | awk 'NR == 2 { print $4 }') / 1024))
  if [ "$avail_mb" -ge $((mem_mb + 256)) ]; then
    uml_tmp="$d"
    break
  fi
done
[ -n "$uml_tmp" ] || die "no directory with ${mem_mb} MiB free for UML's memory (tried TMPDIR, /dev/shm, /tmp, .vm)"

vm_write_job uml "$out" "$modules" "$2" "${3:-}"
vm_boot UML "$out" "${VM_TIMEOUT:-1800}" \
  env TMPDIR="$uml_tmp" "$uml" mem="$mem" root=/dev/root rootfstype=hostfs rootflags=/ rw quiet \
  init="$REPO/scripts/vm/guest-init.sh" vmjob="$out/job.env" con=null con0=fd:0,fd:1
