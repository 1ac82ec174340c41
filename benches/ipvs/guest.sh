#!/bin/bash
# Benchmark payload, run inside UML by benches/ipvs/run.sh (through
# scripts/vm/uml.sh; the guest is set up by scripts/vm/guest-init.sh).
# Writes "KEY VALUE" lines to $VM_OUT/results.txt (times in microseconds),
# strace -c tables to $VM_OUT/strace/, its log to $VM_OUT/guest.log.
set -u
# shellcheck disable=SC1091
. "$VM_OUT/bench.env"
res="$VM_OUT/results.txt"
: >"$res"
mkdir -p "$VM_OUT/strace"
exec >>"$VM_OUT/guest.log" 2>&1
W=/tmp/bench # guest tmpfs: inputs and outputs stay off hostfs
mkdir -p "$W"
fail=0

say() { echo "[$(cut -d' ' -f1 /proc/uptime)] $*"; }
now_us() { echo $(($(date +%s%N) / 1000)); }
put() { echo "$1 $2" >>"$res"; }
bad() {
  say "FAIL: $*"
  put "fail" "$*"
  fail=1
}

# Fresh ip_vs module: no services, empty dest trash.
reload_ipvs() {
  ipvsadm -C
  local users m
  users=$(awk '$1=="ip_vs"{print $4}' /proc/modules | tr ',' ' ' | tr -d '-')
  for m in $users; do rmmod "$m" || bad "rmmod $m"; done
  rmmod ip_vs || bad "rmmod ip_vs"
  if ! modprobe ip_vs || ! modprobe ip_vs_rr; then bad "modprobe ip_vs ip_vs_rr"; fi
}

# measure KEY STDIN STDOUT CMD...: run once, record wall time in us.
measure() {
  local key="$1" in="$2" out="$3" t0 t1 rc
  shift 3
  t0=$(now_us)
  "$@" <"$in" >"$out"
  rc=$?
  t1=$(now_us)
  put "$key" $((t1 - t0))
  say "$key: $((t1 - t0)) us (exit $rc)"
  [ "$rc" -eq 0 ] || bad "$key exited $rc"
}

# straced KEY STDIN STDOUT CMD...: run once under strace -c -f.
straced() {
  local key="$1" in="$2" out="$3" rc
  shift 3
  strace -c -f -o "$VM_OUT/strace/$key.txt" "$@" <"$in" >"$out"
  rc=$?
  say "strace $key (exit $rc)"
  [ "$rc" -eq 0 ] || bad "strace $key exited $rc"
}

# The kernel holds exactly the rules of size N.
check_state() { # KEY N
  ipvsadm -Sn | sort >"$W/state"
  if cmp -s "$W/state" "$W/$2.sorted"; then
    put "state_ok_$1" 1
  else
    put "state_ok_$1" 0
    bad "$1: kernel state differs from the rules ($(wc -l <"$W/state") lines vs $(wc -l <"$W/$2.sorted"))"
  fi
}

check_empty() { # KEY
  if [ -z "$(ipvsadm -Sn)" ]; then put "empty_ok_$1" 1; else
    put "empty_ok_$1" 0
    bad "$1: services left after flush"
  fi
}

has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

# measure_cpu KEY STDIN STDOUT CMD...: run once; wall time (us) as KEY,
# the command's user and system CPU time as KEY_user / KEY_sys (us).
measure_cpu() {
  local key="$1" in="$2" out="$3" t0 t1 rc real user sys
  shift 3
  local TIMEFORMAT='%3R %3U %3S'
  t0=$(now_us)
  { time "$@" <"$in" >"$out"; } 2>"$W/time"
  rc=$?
  t1=$(now_us)
  read -r real user sys <"$W/time"
  put "$key" $((t1 - t0))
  put "${key}_user" "$(python3 -c "print(round($user * 1e6))")"
  put "${key}_sys" "$(python3 -c "print(round($sys * 1e6))")"
  say "$key: $((t1 - t0)) us (user $user s, sys $sys s, exit $rc)"
  [ "$rc" -eq 0 ] || bad "$key exited $rc"
}

# floor_run SUFFIX ARGS...: the floor binary; its KEY VALUE lines are
# recorded as KEY_SUFFIX.
floor_run() {
  local suffix="$1" k v rc
  shift
  "$FLOOR" "$@" >"$W/floor.out" 2>"$W/floor.err"
  rc=$?
  while read -r k v; do put "${k}_$suffix" "$v"; done <"$W/floor.out"
  say "floor $1: $(tr '\n' ' ' <"$W/floor.out") (exit $rc)"
  [ "$rc" -eq 0 ] || bad "floor $* exited $rc: $(cat "$W/floor.err")"
}

# One floor round of size N: three restores of the same rules (the
# kernel's floor, Handle::apply, ipvsctl restore), each on a fresh module,
# in the order given; after each, the dumps in the same order (the floor;
# Handle::dump then Handle::dump_each; ipvsctl save).
floor_round() { # N ORDER...
  local n="$1" what
  shift
  for what in "$@"; do
    reload_ipvs
    case "$what" in
    replay) floor_run "$n" replay-restore "$W/$n.rules" ;;
    apply) floor_run "$n" apply "$W/$n.rules" ;;
    ipvsctl) measure_cpu "floor_ipvsctl_restore_$n" "$W/$n.rules" /dev/null "$IPVSCTL" restore ;;
    esac
    check_state "floor_${what}_$n" "$n"
    for d in "$@"; do
      case "$d" in
      replay) floor_run "$n" replay-dump ;;
      apply)
        floor_run "$n" dump
        floor_run "$n" dump-each
        ;;
      ipvsctl) measure_cpu "floor_ipvsctl_save_$n" /dev/null /dev/null "$IPVSCTL" save ;;
      esac
    done
  done
}

say "bench: sizes $SIZES x $REALS, parts $PARTS, ipvsctl $IPVSCTL, $(ipvsadm -v)"
put "kernel" "$(uname -r)"
for n in $SIZES; do
  cp "$VM_OUT/rules/$n.rules" "$W/$n.rules"
  sort "$W/$n.rules" >"$W/$n.sorted"
done
if has floor; then
  for n in $SIZES; do
    for r in $(seq "$FLOOR_ROUNDS"); do
      say "floor round $r at $n"
      # Rotate the order so that no contender always runs first or last.
      case $((r % 3)) in
      1) floor_round "$n" replay apply ipvsctl ;;
      2) floor_round "$n" apply ipvsctl replay ;;
      0) floor_round "$n" ipvsctl replay apply ;;
      esac
    done
  done
  ipvsadm -C
fi
has compare || SIZES="" STRACE_SIZES=""
for n in $SIZES; do
  rules="$W/$n.rules"

  # A. batched restore (several samples, each on a fresh module), then both
  # saves on the same state, then our flush.
  for _ in $(seq "$RESTORE_SAMPLES"); do
    reload_ipvs
    measure "restore_batched_$n" "$rules" /dev/null "$IPVSCTL" restore
    check_state "restore_batched_$n" "$n"
  done
  # Saves alternate (ours, theirs, ours, theirs): the machine is shared, so
  # several samples; the report takes the best of each.
  for _ in 1 2; do
    measure "save_ipvsctl_$n" /dev/null "$W/save_ours" "$IPVSCTL" save
    measure "save_ipvsadm_$n" /dev/null "$W/save_theirs" ipvsadm -Sn
    if cmp -s "$W/save_ours" "$W/save_theirs"; then put "save_identical_$n" 1; else
      put "save_identical_$n" 0
      bad "ipvsctl save and ipvsadm -Sn differ at N=$n"
    fi
  done
  measure "flush_ipvsctl_$n" /dev/null /dev/null "$IPVSCTL" flush
  check_empty "flush_ipvsctl_$n"

  # B. one request per round trip; ipvsadm's flush.
  for _ in $(seq "$RESTORE_SAMPLES"); do
    reload_ipvs
    measure "restore_unbatched_$n" "$rules" /dev/null "$IPVSCTL" restore --no-batch
    check_state "restore_unbatched_$n" "$n"
    measure "flush_ipvsadm_$n" /dev/null /dev/null ipvsadm -C
    check_empty "flush_ipvsadm_$n"
  done

  # C. ipvsadm -R (fewer samples above IPVSADM_R_SAMPLES_MAX services: it
  # takes minutes); a third sample of both saves; our flush again.
  samples="$RESTORE_SAMPLES"
  [ "$n" -le "$IPVSADM_R_SAMPLES_MAX" ] || samples=1
  for i in $(seq "$samples"); do
    reload_ipvs
    measure "restore_ipvsadm_$n" "$rules" /dev/null ipvsadm -R
    check_state "restore_ipvsadm_$n" "$n"
    if [ "$i" = 1 ]; then
      measure "save_ipvsadm_$n" /dev/null "$W/save_theirs" ipvsadm -Sn
      measure "save_ipvsctl_$n" /dev/null "$W/save_ours" "$IPVSCTL" save
      cmp -s "$W/save_ours" "$W/save_theirs" || bad "save outputs differ after ipvsadm -R at N=$n"
    fi
    measure "flush_ipvsctl_$n" /dev/null /dev/null "$IPVSCTL" flush
    check_empty "flush_ipvsctl_$n"
  done
done

# Syscall counts: the same commands again, each under strace -c -f.
for n in $STRACE_SIZES; do
  rules="$W/$n.rules"
  reload_ipvs
  straced "restore_batched_$n" "$rules" /dev/null "$IPVSCTL" restore
  straced "save_ipvsctl_$n" /dev/null /dev/null "$IPVSCTL" save
  straced "save_ipvsadm_$n" /dev/null /dev/null ipvsadm -Sn
  straced "flush_ipvsctl_$n" /dev/null /dev/null "$IPVSCTL" flush
  reload_ipvs
  straced "restore_unbatched_$n" "$rules" /dev/null "$IPVSCTL" restore --no-batch
  straced "flush_ipvsadm_$n" /dev/null /dev/null ipvsadm -C
  # ipvsadm -R under strace crawls in UML (~130 s at 1,000 x 10); its
  # syscalls per add do not depend on N, so it is traced up to a limit.
  if [ "$n" -le "$STRACE_IPVSADM_R_MAX" ]; then
    reload_ipvs
    straced "restore_ipvsadm_$n" "$rules" /dev/null ipvsadm -R
    check_state "strace_restore_ipvsadm_$n" "$n"
    ipvsadm -C
  fi
done
say "bench done (fail=$fail)"
exit "$fail"
