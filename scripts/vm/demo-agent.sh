#!/bin/bash
# Guest payload of scripts/demo.sh (qemu: the agent needs nftables): four
# pods in network namespaces behind a bridge, the agent `ipvs-proxy
# --manifests DIR` on the example manifests, real requests to the Services,
# then an edited manifest and the traffic moving.
#   demo-agent.sh IPVS_PROXY EXAMPLES_DIR
# EXAMPLES_DIR holds manifests/ (what the agent starts with) and
# manifests-edit/ (files copied over it, one by one, in the second act).
# Exit status 0 when every check passed. The agent's log: $VM_OUT/agent.log.
set -u
bin="$1" examples="$2"
here="$(cd "$(dirname "$0")" && pwd)"
net="$here/demo-net.py"
out="${VM_OUT:?run by guest-init.sh}"
work=/tmp/demo
dir="$work/manifests"
mkdir -p "$work" "$dir"
agent_log="$out/agent.log"

t0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
banner() { printf '\n=== [%5s s] %s\n' "$(since "$t0")" "$*"; }
checks=() failed=0
check() { # DESCRIPTION COMMAND...: run, record PASS/FAIL
  local what="$1"
  shift
  if "$@"; then checks+=("PASS  $what"); else
    checks+=("FAIL  $what")
    failed=1
  fi
}
# tallies DESCRIPTION PROTO VIP PORT N EXPECT [DESCRIPTION ...]: one client
# run (demo-net.py tally), one check per group.
tallies() {
  local descs=() args=() res=() i
  while [ $# -ge 6 ]; do
    descs+=("$1")
    args+=("$2" "$3" "$4" "$5" "$6")
    shift 6
  done
  rm -f "$work/results"
  python3 "$net" tally "$work/results" "${args[@]}"
  [ -r "$work/results" ] && mapfile -t res <"$work/results"
  for i in "${!descs[@]}"; do
    if [ "${res[$i]:-1}" = 0 ]; then checks+=("PASS  ${descs[$i]}"); else
      checks+=("FAIL  ${descs[$i]}")
      failed=1
    fi
  done
}
# wait_for SECONDS COMMAND...: poll (0.2 s) until COMMAND succeeds.
wait_for() {
  local limit="$1" start
  shift
  start=$(date +%s)
  until "$@"; do
    [ $(($(date +%s) - start)) -ge "$limit" ] && return 1
    sleep 0.2
  done
}
show() { "$bin" show "$@" --manifests "$dir" --hostname-override node-a; }
ipvs_has() { ipvsadm -Sn | grep -q -- "$1"; }
all_ready() {
  local p
  for p in a b c d; do [ -e "$work/ready/pod-$p" ] || return 1; done
}

# --- the node and its pods -----------------------------------------------------
banner "node-a: this VM (uplink0 10.0.2.15); four pods on bridge cni0, each answering with its name"
ip link add cni0 type bridge && ip link set cni0 up && ip addr add 10.244.0.1/24 dev cni0 || exit 1
n=11 pods=()
mkdir -p "$work/ready"
for p in a b c d; do
  ns="pod-$p" ip="10.244.0.$n"
  n=$((n + 1))
  {
    ip netns add "$ns" &&
      ip link add "veth-$p" type veth peer name eth0 netns "$ns" &&
      ip link set "veth-$p" master cni0 up &&
      ip -n "$ns" link set lo up && ip -n "$ns" link set eth0 up &&
      ip -n "$ns" addr add "$ip/24" dev eth0 &&
      ip -n "$ns" route add default via 10.244.0.1
  } || exit 1
  pods+=("$ns=$ip")
  echo "$ns  $ip  HTTP :8080, UDP :5353"
done
python3 "$net" serve "$work/ready" "${pods[@]}" &
wait_for 60 all_ready || {
  echo "the pods did not come up in 60 s"
  exit 1
}

# --- the agent -------------------------------------------------------------------
cp "$examples"/manifests/*.yaml "$dir/"
banner "ipvs-proxy --manifests $dir   (the example Services, from examples/manifests/)"
grep -h '^# ' "$dir"/*.yaml | sed 's/^# /  /'
: >"$agent_log"
"$bin" --manifests "$dir" --hostname-override node-a --cluster-cidr 10.244.0.0/16 \
  --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256 \
  >>"$agent_log" 2>&1 &
agent=$!
t_start=$(date +%s.%N)
programmed() {
  ipvsadm -Sn >"$work/ipvs" 2>/dev/null &&
    grep -q -- '-A -t 10.96.0.10:80' "$work/ipvs" &&
    grep -q -- '-A -t 10.96.0.11:80' "$work/ipvs" &&
    grep -q -- '-A -u 10.96.0.53:53' "$work/ipvs" &&
    [ "$(grep -c -- '^-a ' "$work/ipvs")" -ge 9 ]
}
if wait_for 120 programmed; then
  echo "all three Services programmed $(since "$t_start") s after the agent started"
else
  echo "the agent did not program the Services in 120 s; its log:"
  tail -n 30 "$agent_log"
  kill "$agent"
  exit 1
fi

banner "ipvs-proxy show"
show

banner "traffic: one new connection (or datagram) per request"
tallies \
  "web: 30 requests spread evenly over pod-a, pod-b, pod-c" \
  tcp 10.96.0.10 80 30 pod-a=10,pod-b=10,pod-c=10 \
  "web-sticky: 12 requests from one client all answered by one pod (ClientIP affinity)" \
  tcp 10.96.0.11 80 12 one=12 \
  "echo-udp: 9 datagrams spread evenly over pod-a, pod-b, pod-c" \
  udp 10.96.0.53 53 9 pod-a=3,pod-b=3,pod-c=3

# --- the edit ----------------------------------------------------------------------
banner "edit web.yaml: pod-c replaced by pod-d (written aside, then renamed in)"
for f in "$examples"/manifests-edit/*.yaml; do
  diff -U0 "$dir/${f##*/}" "$f" | grep -v -E '^(@@|--- |\+\+\+ )' | sed 's/^/  /'
  cp "$f" "$dir/.${f##*/}.tmp" && mv "$dir/.${f##*/}.tmp" "$dir/${f##*/}"
done
t_edit=$(date +%s.%N)
log_lines=$(wc -l <"$agent_log")
moved() {
  ipvsadm -Sn >"$work/ipvs" 2>/dev/null &&
    grep -q -- '-a -t 10.96.0.10:80 -r 10.244.0.14:8080 -m -w 1' "$work/ipvs" &&
    ! grep -q -- '-a -t 10.96.0.10:80 -r 10.244.0.13:8080 -m -w 1' "$work/ipvs"
}
if wait_for 60 moved; then
  echo "programmed $(since "$t_edit") s after the rename; the agent logged:"
  checks+=("PASS  the edit programmed (pod-d in, pod-c out of rotation) within 60 s")
else
  echo "the edit was not programmed in 60 s; the agent logged:"
  checks+=("FAIL  the edit programmed (pod-d in, pod-c out of rotation) within 60 s")
  failed=1
fi
# The forwarding changes, without the timestamp and target columns.
tail -n +$((log_lines + 1)) "$agent_log" | grep -E 'INFO .*(server|address) ' |
  sed -E 's/^[^ ]+ +INFO [^ ]+: /  /'

banner "ipvs-proxy show default/web"
show default/web
echo "(pod-c drains at weight 0: IPVS still tracks its closed connections in TIME_WAIT; the"
echo " agent deletes it once they are gone, or after --drain-period)"

banner "traffic again"
tallies \
  "web after the edit: 30 requests spread evenly over pod-a, pod-b, pod-d, none to pod-c" \
  tcp 10.96.0.10 80 30 pod-a=10,pod-b=10,pod-d=10 \
  "web-sticky (not edited): 12 requests still all answered by one pod" \
  tcp 10.96.0.11 80 12 one=12
check "agent still running" kill -0 "$agent"

banner "checks"
printf '%s\n' "${checks[@]}"
kill "$agent" 2>/dev/null
wait "$agent" 2>/dev/null
if [ "$failed" -eq 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
exit "$failed"
