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

vm_write_job uml "$out" "$modules" "$2" "${3:-}"
vm_boot UML "$out" "${VM_TIMEOUT:-1800}" \
  "$uml" mem="${UML_MEM:-2048M}" root=/dev/root rootfstype=hostfs rootflags=/ rw quiet \
  init="$REPO/scripts/vm/guest-init.sh" vmjob="$out/job.env" con=null con0=fd:0,fd:1
