#!/bin/bash
# Agent benchmark payload, run inside UML by benches/agent/run.sh (through
# scripts/vm/uml.sh; the guest is set up by scripts/vm/guest-init.sh).
# For each size N, REPEAT times: a fresh ip_vs module, the manifests copied
# to the guest's tmpfs, then
#   1. start `ipvs-proxy --manifests DIR --packet-filter none`; bench_probe
#      polls until every Service's virtual server has its 10 real servers:
#      start -> complete;
#   2. one full `ipvsadm -Sn`, compared with what `ipvs-proxy plan` predicts;
#   3. CHANGES times: bench_probe renames a prepared file over one Service's
#      manifest (first endpoint address replaced) and polls that virtual
#      server until the new real server is in and the old one out;
#   4. VmRSS, VmHWM and CPU time (utime + stime) of the agent from /proc.
# Writes "KEY VALUE" lines to $VM_OUT/results.txt (times in microseconds,
# memory in kB, CPU in clock ticks), its log to $VM_OUT/guest.log, the
# agent's logs to $VM_OUT/agent-N.log. Also recorded: when the agent had read
# every manifest (its log), its sync-duration histograms (/metrics), and how
# long `ipvs-proxy plan` takes on the same manifests in the guest.
set -u
# shellcheck disable=SC1091
. "$VM_OUT/bench.env"
res="$VM_OUT/results.txt"
: >"$res"
exec >>"$VM_OUT/guest.log" 2>&1
W=/tmp/bench # guest tmpfs: the agent's inputs stay off hostfs
mkdir -p "$W"
fail=0

say() { echo "[$(cut -d' ' -f1 /proc/uptime)] $*"; }
put() { echo "$1 $2" >>"$res"; }
bad() {
  say "FAIL: $*"
  put "fail" "$*"
  fail=1
}
now_us() { echo "${EPOCHREALTIME/./}"; }

# Fresh ip_vs module: no services, empty dest trash; no kube-ipvs0.
reset_kernel() {
  ipvsadm -C
  ip link del kube-ipvs0 2>/dev/null
  local users m
  users=$(awk '$1=="ip_vs"{print $4}' /proc/modules | tr ',' ' ' | tr -d '-')
  for m in $users; do rmmod "$m" || bad "rmmod $m"; done
  rmmod ip_vs || bad "rmmod ip_vs"
  if ! modprobe ip_vs || ! modprobe ip_vs_rr; then bad "modprobe ip_vs ip_vs_rr"; fi
}

# proc_sample PID SUFFIX: memory and CPU of PID.
proc_sample() {
  local pid="$1" sfx="$2" stat
  put "rss_kb_$sfx" "$(awk '$1=="VmRSS:"{print $2}' "/proc/$pid/status")"
  put "hwm_kb_$sfx" "$(awk '$1=="VmHWM:"{print $2}' "/proc/$pid/status")"
  # Fields after the ")" of the command name: utime is the 12th, stime the 13th.
  stat=$(sed 's/.*) //' "/proc/$pid/stat")
  put "cpu_ticks_$sfx" "$(echo "$stat" | awk '{print $12 + $13}')"
}

say "bench: sizes $SIZES x $REALS real servers, $CHANGES changes, agent $AGENT"
put "kernel" "$(uname -r)"
put "clk_tck" "$(getconf CLK_TCK)"
for n in $SIZES; do
  for rep in $(seq "$REPEAT"); do
    say "N=$n: repetition $rep of $REPEAT"
    reset_kernel
    D="$W/$n"
    mkdir -p "$D"
    cp -r "$VM_OUT/data/$n/manifests" "$D/m"
    # Prepared replacements, in the same directory (rename is atomic) under
    # names the agent does not read.
    k=0
    while read -r file vip new old; do
      cp "$VM_OUT/data/$n/changes/c$k.yaml" "$D/m/.c$k.tmp"
      k=$((k + 1))
    done <"$VM_OUT/data/$n/changes.txt"
    sync

    say "N=$n: starting the agent${AGENT_ENV:+ (env $AGENT_ENV)}"
    wrap=()
    [ "$STRACE" = 1 ] && wrap=(strace -f -c -o "$VM_OUT/strace-$n-$rep.txt")
    t0=$(now_us)
    # shellcheck disable=SC2086 # AGENT_ENV is a list of VAR=value words
    "${wrap[@]}" env $AGENT_ENV "$AGENT" --manifests "$D/m" --hostname-override bench-node \
      --packet-filter none >"$D/agent.log" 2>&1 &
    pid=$!
    if [ "$STRACE" = 1 ]; then
      # The agent is strace's child (env execs it).
      tracer=$pid
      for _ in $(seq 100); do
        pid=$(pgrep -P "$tracer" | head -1)
        [ -n "$pid" ] && break
        sleep 0.05
      done
    fi
    if "$PROBE" complete "$t0" "$VM_OUT/data/$n/keys.txt" "$REALS" "$COMPLETE_TIMEOUT" >"$D/complete.txt"; then
      put "complete_us_$n" "$(awk '$1=="complete_us"{print $2}' "$D/complete.txt")"
      put "complete_polls_$n" "$(awk '$1=="polls"{print $2}' "$D/complete.txt")"
      say "N=$n: complete: $(tr '\n' ' ' <"$D/complete.txt")"
    else
      bad "N=$n: IPVS state not complete after ${COMPLETE_TIMEOUT}s: $(tr '\n' ' ' <"$D/complete.txt")"
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      bad "N=$n: the agent exited early"
      cp "$D/agent.log" "$VM_OUT/agent-$n.log"
      rm -rf "$D"
      continue
    fi
    proc_sample "$pid" "complete_$n"
    # When the agent had read every manifest (its log line), from the start.
    t_list=$(grep -m1 'initial list complete kind=EndpointSlice' "$D/agent.log" | cut -d' ' -f1)
    [ -n "$t_list" ] && put "listed_us_$n" $(($(date -d "$t_list" +%s%6N) - t0))

    # The whole state, once: exactly what `ipvs-proxy plan` predicts.
    ipvsadm -Sn | sort >"$D/state"
    if cmp -s "$D/state" "$VM_OUT/data/$n/plan.sorted"; then
      put "state_ok_$n" 1
    else
      put "state_ok_$n" 0
      diff "$D/state" "$VM_OUT/data/$n/plan.sorted" | head -20
      bad "N=$n: kernel state differs from the plan ($(wc -l <"$D/state") lines vs $(wc -l <"$VM_OUT/data/$n/plan.sorted"))"
    fi
    put "state_lines_$n" "$(wc -l <"$D/state")"

    k=0
    while read -r file vip new old; do
      # Let the agent settle between changes (no coalescing of two changes).
      sleep 0.5
      if "$PROBE" change "$D/m/.c$k.tmp" "$D/m/$file" "$vip" "$new" "$old" "$CHANGE_TIMEOUT" >"$D/change$k.txt"; then
        put "change_us_$n" "$(awk '$1=="change_us"{print $2}' "$D/change$k.txt")"
      else
        bad "N=$n: change $k ($file: $old -> $new) not seen in ${CHANGE_TIMEOUT}s: $(tr '\n' ' ' <"$D/change$k.txt")"
      fi
      k=$((k + 1))
    done <"$VM_OUT/data/$n/changes.txt"
    sleep 1
    proc_sample "$pid" "end_$n"
    # The agent's own sync timings (kube-proxy's histograms: _sum and _count).
    curl -s --max-time 10 http://127.0.0.1:10249/metrics |
      awk -v n="$n" '/^kubeproxy_sync_(full_|partial_)?proxy_rules_duration_seconds_(sum|count) / { print $1 "_" n, $2 }' >>"$res"
    # Threads and the agent's own view of its syncs, for the record.
    put "threads_$n" "$(awk '$1=="Threads:"{print $2}' "/proc/$pid/status")"
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { bad "N=$n: the agent ignored SIGTERM for 10 s"; kill -KILL "$pid"; }
    if [ "$STRACE" = 1 ]; then
      wait "$tracer"
    else
      wait "$pid"
    fi
    put "agent_exit_$n" "$?"
    # Where the first full sync's time went (the agent's "sync done" line).
    done_line=$(grep -m1 'sync done kind=Full' "$D/agent.log")
    if [ -n "$done_line" ]; then
      put "first_sync_end_us_$n" $(($(date -d "${done_line%% *}" +%s%6N) - t0))
      echo "$done_line" | grep -oE '[a-z]+_ms=[0-9.]+' |
        while IFS='=' read -r k v; do put "first_sync_${k}_$n" "$v"; done
    fi
    put "agent_log_lines_$n" "$(wc -l <"$D/agent.log")"
    grep -iE 'warn|error' "$D/agent.log" | head -20 >"$VM_OUT/agent-$n.warnings.log"
    cp "$D/agent.log" "$VM_OUT/agent-$n.log"
    # The same parsing and planning without a kernel: `ipvs-proxy plan`.
    t1=$(now_us)
    "$AGENT" plan --manifests "$VM_OUT/data/$n/manifests" --node-name bench-node --node-ip 10.0.2.15 >/dev/null 2>&1
    put "plan_us_$n" $(($(now_us) - t1))
    rm -rf "$D"
  done
done
say "bench done (fail=$fail)"
exit "$fail"
