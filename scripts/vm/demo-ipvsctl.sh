#!/bin/bash
# Guest payload of `scripts/demo.sh ipvsctl`: program IPVS with ipvsctl, then show what
# ipvsctl and ipvsadm (the reference tool) read back, side by side.
#   demo-ipvsctl.sh IPVSCTL RULES
# Exit status 0 when the restore worked and `ipvsctl save` prints exactly the
# lines `ipvsadm -Sn` prints.
set -u
ipvsctl="$1" rules="$2"
work=/tmp/demo
mkdir -p "$work"

banner() { printf '\n=== %s\n' "$*"; }
side_by_side() { # LEFT_TITLE LEFT_FILE RIGHT_TITLE RIGHT_FILE
  { printf '%s\n' "--- $1"; cat "$2"; } >"$work/left"
  { printf '%s\n' "--- $3"; cat "$4"; } >"$work/right"
  awk 'NR == FNR { left[FNR] = $0; n = FNR; next }
       { printf "%-72s %s\n", left[FNR], $0; if (FNR > m) m = FNR }
       END { for (i = m + 1; i <= n; i++) print left[i] }' "$work/left" "$work/right"
}

banner "ipvsctl restore < ${rules##*/}   ($(grep -c . "$rules") rules, ipvsadm -R format)"
if ! "$ipvsctl" restore <"$rules"; then
  echo "ipvsctl restore FAILED"
  exit 1
fi
echo "ok"

"$ipvsctl" list >"$work/list" 2>&1
ipvsadm -Ln >"$work/ipvsadm-L" 2>&1
banner "what the kernel now holds"
side_by_side "ipvsctl list" "$work/list" "ipvsadm -Ln" "$work/ipvsadm-L"

"$ipvsctl" save >"$work/save" 2>&1
ipvsadm -Sn >"$work/ipvsadm-S" 2>&1
banner "the same state as rules"
side_by_side "ipvsctl save" "$work/save" "ipvsadm -Sn" "$work/ipvsadm-S"

banner "ipvsctl save vs ipvsadm -Sn"
if diff -u "$work/ipvsadm-S" "$work/save"; then
  echo "identical ($(wc -l <"$work/save") lines)"
else
  echo "DIFFERENT (diff above: - ipvsadm, + ipvsctl)"
  exit 1
fi
