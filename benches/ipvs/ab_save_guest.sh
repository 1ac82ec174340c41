#!/bin/bash
# Payload of benches/ipvs/ab_save.sh, run inside UML: restore RULES once,
# then save with OLD and NEW alternately ROUNDS times each (wall time, and
# user/sys CPU), then once each under strace -c -f.
# Env file $VM_OUT/ab.env: OLD, NEW (ipvsctl binaries), RULES, ROUNDS.
set -u
# shellcheck disable=SC1091
. "$VM_OUT/ab.env"
res="$VM_OUT/results.txt"; : >"$res"
exec >>"$VM_OUT/guest.log" 2>&1
W=/tmp/ab; mkdir -p "$W"
now_us() { echo $(($(date +%s%N) / 1000)); }
modprobe ip_vs; modprobe ip_vs_rr
cp "$RULES" "$W/rules"
"$NEW" restore <"$W/rules" || echo "restore failed"
echo "lines $(ipvsadm -Sn | wc -l)" >>"$res"
for b in OLD NEW; do
  bin=${!b}
  "$bin" save >"$W/$b.out"   # warm-up
done
cmp -s "$W/OLD.out" "$W/NEW.out" && echo "same_output 1" >>"$res" || echo "same_output 0" >>"$res"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then order="OLD NEW"; else order="NEW OLD"; fi
  for b in $order; do
    bin=${!b}
    t0=$(now_us)
    { TIMEFORMAT='%U %S'; time "$bin" save >"$W/o"; } 2>"$W/t"
    t1=$(now_us)
    echo "save_$b $((t1 - t0))" >>"$res"
    echo "cpu_$b $(cat "$W/t")" >>"$res"
  done
done
for b in OLD NEW; do
  bin=${!b}
  strace -c -f -o "$VM_OUT/strace_$b.txt" "$bin" save >"$W/o"
done
echo 0 >"$VM_OUT/payload.rc"
