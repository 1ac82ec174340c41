#!/bin/bash
# Filter benchmark payload, run inside the qemu guest by benches/filter/run.sh
# (through scripts/vm/qemu.sh; the guest is set up by scripts/vm/guest-init.sh).
# For each size N and each mode (on: the nftables packet filter; off:
# --packet-filter none, the control): IPVS, kube-ipvs0 and our table
# cleared, the manifests copied to the guest's tmpfs, then
#   1. start the agent (its `nft` is the logging wrapper); bench_probe waits
#      for the complete IPVS state, then (on) for the complete nft table;
#   2. (on) one count of the service-ports set; one full `ipvsadm -Sn`
#      compared with `ipvs-proxy plan`;
#   3. CHANGES changes of each kind (data/N/filter-changes.txt), one at a
#      time, 1 s apart: bench_probe watch does the rename/unlink and polls
#      until the kernel shows it in IPVS and (on) in nft;
#   4. (on) the poller's own cost: 20 `nft get element` and 5 `nft list set`
#      runs timed while the agent is idle;
#   5. VmRSS, VmHWM and CPU time (utime + stime) of the agent.
# Writes "KEY VALUE" lines to $VM_OUT/results.txt (times in microseconds,
# memory in kB, CPU in clock ticks), per change "KIND K T0_US DONE_US IPVS_US
# NFT_US POLLER_EXECS POLLER_EXEC_US" to $VM_OUT/changes-N-MODE.txt, the
# wrapper's log to $VM_OUT/nft-N-MODE.log, its own log to $VM_OUT/guest.log.
set -u
# shellcheck disable=SC1091
. "$VM_OUT/bench.env"
res="$VM_OUT/results.txt"
: >"$res"
exec >>"$VM_OUT/guest.log" 2>&1
W=/tmp/bench # guest tmpfs: the agent's inputs stay off the 9p root
mkdir -p "$W"
fail=0
T=ipvs-proxy

say() { echo "[$(cut -d' ' -f1 /proc/uptime)] $*"; }
put() { echo "$1 $2" >>"$res"; }
bad() {
  say "FAIL: $*"
  put "fail" "$*"
  fail=1
}
now_us() { echo "${EPOCHREALTIME/./}"; }
val() { awk -v k="$1" '$1==k{print $2}' "$2"; }

reset_kernel() {
  ipvsadm -C
  ip link del kube-ipvs0 2>/dev/null
  "$REAL_NFT" delete table inet "$T" 2>/dev/null
  conntrack -F 2>/dev/null
  return 0
}

# proc_sample PID KEY_SUFFIX
proc_sample() {
  local pid="$1" sfx="$2" stat
  put "rss_kb_$sfx" "$(awk '$1=="VmRSS:"{print $2}' "/proc/$pid/status")"
  put "hwm_kb_$sfx" "$(awk '$1=="VmHWM:"{print $2}' "/proc/$pid/status")"
  stat=$(sed 's/.*) //' "/proc/$pid/stat")
  put "cpu_ticks_$sfx" "$(echo "$stat" | awk '{print $12 + $13}')"
}

say "bench: sizes $SIZES, modes $MODES, x $REALS real servers, $CHANGES changes per kind; $(nproc) CPUs; $("$REAL_NFT" --version)"
put "kernel" "$(uname -r)"
put "clk_tck" "$(getconf CLK_TCK)"
put "cpus" "$(nproc)"
for n in $SIZES; do
  for mode in $MODES; do
    s="${n}_$mode"
    say "N=$n filter $mode"
    reset_kernel
    D="$W/$n-$mode"
    mkdir -p "$D"
    cp -r "$VM_OUT/data/$n/manifests" "$D/m"
    # Prepared files in the manifest directory (rename is atomic), under
    # names the agent does not read.
    for f in "$VM_OUT/data/$n/filter-changes"/*.yaml; do
      cp "$f" "$D/m/.${f##*/}.tmp"
    done
    sync
    flags=(--manifests "$D/m" --hostname-override bench-node --ipvs-sync-period=1h)
    [ "$mode" = off ] && flags+=(--packet-filter none)
    # exec: the filter on, every element change through `nft -f -` (the
    # path before nfnetlink element transactions).
    [ "$mode" = exec ] && flags+=(--nft-element-updates=nft)
    say "N=$n $mode: starting the agent"
    t0=$(now_us)
    # shellcheck disable=SC2086 # AGENT_ENV is a list of VAR=value words
    env PATH="$VM_OUT/bin:$PATH" BENCH_REAL_NFT="$REAL_NFT" BENCH_NFT_LOG="$D/nft.log" \
      $AGENT_ENV "$AGENT" "${flags[@]}" >"$D/agent.log" 2>&1 &
    pid=$!
    if "$PROBE" complete "$t0" "$VM_OUT/data/$n/keys.txt" "$REALS" "$COMPLETE_TIMEOUT" >"$D/complete.txt"; then
      put "complete_ipvs_us_$s" "$(val complete_us "$D/complete.txt")"
      say "N=$n $mode: IPVS complete: $(tr '\n' ' ' <"$D/complete.txt")"
    else
      bad "N=$n $mode: IPVS state not complete after ${COMPLETE_TIMEOUT}s: $(tr '\n' ' ' <"$D/complete.txt")"
    fi
    proc_sample "$pid" "ipvs_$s"
    if [ "$mode" != off ]; then
      first=$(head -1 "$VM_OUT/data/$n/keys.txt")
      last=$(tail -1 "$VM_OUT/data/$n/keys.txt")
      if "$PROBE" watch "since:$t0" "$COMPLETE_TIMEOUT" \
        "nft-has:service-ports-v4:${first%:*} . tcp . 80" \
        "nft-has:service-ports-v4:${last%:*} . tcp . 80" \
        "nft-list-has:lb-allowed-v4:192.0.2.1 . tcp . 80 . 198.51.100.0/24" >"$D/complete-nft.txt"; then
        put "complete_nft_us_$s" "$(val done_us "$D/complete-nft.txt")"
        say "N=$n $mode: nft complete: $(tr '\n' ' ' <"$D/complete-nft.txt")"
      else
        bad "N=$n $mode: nft table not complete after ${COMPLETE_TIMEOUT}s: $(tr '\n' ' ' <"$D/complete-nft.txt")"
      fi
      proc_sample "$pid" "nft_$s"
      # Every Service (and the LoadBalancer IPs) in the set: N + CHANGES.
      cnt=$("$REAL_NFT" -j list set inet "$T" service-ports-v4 | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(len(o["set"].get("elem", [])) for o in d["nftables"] if "set" in o))')
      put "nft_service_ports_$s" "$cnt"
      [ "$cnt" = $((n + CHANGES)) ] || bad "N=$n: service-ports-v4 has $cnt elements, expected $((n + CHANGES))"
      put "nft_table_bytes_$s" "$("$REAL_NFT" list table inet "$T" | wc -c)"
    fi
    t_list=$(grep -m1 'initial list complete kind=EndpointSlice' "$D/agent.log" | cut -d' ' -f1)
    [ -n "$t_list" ] && put "listed_us_$s" $(($(date -d "$t_list" +%s%6N) - t0))
    ipvsadm -Sn | sort >"$D/state"
    if cmp -s "$D/state" "$VM_OUT/data/$n/plan.sorted"; then
      put "state_ok_$s" 1
    else
      put "state_ok_$s" 0
      say "N=$n $mode: kernel state differs from the plan ($(wc -l <"$D/state") lines vs $(wc -l <"$VM_OUT/data/$n/plan.sorted")):"
      diff "$D/state" "$VM_OUT/data/$n/plan.sorted" | head -10
    fi
    put "state_lines_$s" "$(wc -l <"$D/state")"

    sleep 2
    t_changes=$(now_us)
    put "changes_start_us_$s" "$t_changes"
    : >"$VM_OUT/changes-$s.txt"
    # The agent's own count of nfnetlink element transactions and bytes
    # (its nft runs are in the wrapper's log): read after each change's
    # settling second, so each change gets the difference.
    nl_counters() {
      curl -s --max-time 10 http://127.0.0.1:10249/metrics |
        awk '$1=="ipvs_proxy_nft_netlink_transactions_total"{t=$2} $1=="ipvs_proxy_nft_netlink_bytes_total"{b=$2} END{printf "%d %d\n", t, b}'
    }
    read -r nl_tx0 nl_b0 <<<"$(nl_counters)"
    k=0
    skip=" "
    while read -r kind op src dst ipvs nft; do
      # After one change of a kind is not seen in time, the rest of that
      # kind are not tried (each would wait CHANGE_TIMEOUT).
      case "$skip" in *" $kind "*)
        echo "$kind $k na skipped na na 0 0 0 0 0 0" >>"$VM_OUT/changes-$s.txt"
        k=$((k + 1))
        continue
        ;;
      esac
      checks=()
      [ "$ipvs" != - ] && IFS=, read -r -a checks <<<"$ipvs"
      if [ "$mode" != off ] && [ "$nft" != - ]; then
        IFS=, read -r -a more <<<"${nft//_/ }"
        checks+=("${more[@]}")
      fi
      case "$op" in
        rename) action="rename:$D/m/.$src.tmp:$D/m/$dst" ;;
        unlink) action="unlink:$D/m/$dst" ;;
      esac
      if [ "${#checks[@]}" = 0 ]; then
        # Nothing the kernel shows changes (lb-range with the filter off):
        # the change is made and not timed.
        "$PROBE" watch "$action" 1 >/dev/null
        line="$kind $k na na na na 0 0 0 0"
      elif "$PROBE" watch "$action" "$CHANGE_TIMEOUT" "${checks[@]}" >"$D/change.txt"; then
        line="$kind $k $(val t0_us "$D/change.txt") $(val done_us "$D/change.txt") $(val ipvs_us "$D/change.txt") $(val nft_us "$D/change.txt") $(val nft_execs "$D/change.txt") $(val nft_exec_us "$D/change.txt") $(val nft_gets "$D/change.txt") $(val nft_get_us "$D/change.txt")"
      else
        bad "N=$n $mode: change $kind $k ($op $dst) not seen in ${CHANGE_TIMEOUT}s: $(tr '\n' ' ' <"$D/change.txt")"
        line="$kind $k $(val t0_us "$D/change.txt") timeout na na 0 0 0 0"
        skip="$skip$kind "
      fi
      k=$((k + 1))
      # Let the agent settle (no coalescing; each change's nft runs in its window).
      sleep 1
      read -r nl_tx nl_b <<<"$(nl_counters)"
      echo "$line $((nl_tx - nl_tx0)) $((nl_b - nl_b0))" >>"$VM_OUT/changes-$s.txt"
      nl_tx0=$nl_tx
      nl_b0=$nl_b
    done <"$VM_OUT/data/$n/filter-changes.txt"
    put "changes_end_us_$s" "$(now_us)"
    proc_sample "$pid" "end_$s"
    if [ "$mode" != off ]; then
      # The poller's cost, agent idle: one `nft get element` on the big set,
      # one `nft list set` of the small interval set.
      t1=$(now_us)
      for _ in $(seq 20); do
        "$REAL_NFT" get element inet "$T" service-ports-v4 "{ ${first%:*} . tcp . 80 }" >/dev/null
      done
      put "poll_get_us_$s" $((($(now_us) - t1) / 20))
      t1=$(now_us)
      for _ in $(seq 5); do
        "$REAL_NFT" list set inet "$T" lb-allowed-v4 >/dev/null
      done
      put "poll_list_us_$s" $((($(now_us) - t1) / 5))
    fi
    curl -s --max-time 10 http://127.0.0.1:10249/metrics |
      awk -v s="$s" '/^kubeproxy_sync_(full_|partial_)?proxy_rules_duration_seconds_(sum|count) / { print $1 "_" s, $2 }' >>"$res"
    curl -s --max-time 10 http://127.0.0.1:10249/metrics | grep -i nft >"$VM_OUT/metrics-nft-$s.txt"
    kill -TERM "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { bad "N=$n $mode: the agent ignored SIGTERM for 30 s"; kill -KILL "$pid"; }
    wait "$pid"
    put "agent_exit_$s" "$?"
    grep -iE 'warn|error' "$D/agent.log" | head -20 >"$VM_OUT/agent-$s.warnings.log"
    cp "$D/agent.log" "$VM_OUT/agent-$s.log"
    [ -f "$D/nft.log" ] && cp "$D/nft.log" "$VM_OUT/nft-$s.log"
    rm -rf "$D"
  done
done
reset_kernel
say "bench done (fail=$fail)"
exit "$fail"
