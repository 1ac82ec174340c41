#!/bin/bash
# Guest payload of scripts/demo.sh (qemu: the agent needs nftables): four
# pods in network namespaces behind a bridge, the agent `ipvs-proxy
# --manifests DIR` on the example manifests, real requests to the Services,
# then an edited manifest and the traffic moving.
#   demo-agent.sh IPVS_PROXY EXAMPLES_DIR
# EXAMPLES_DIR holds manifests/ (what the agent starts with) and
# manifests-edit/ (files copied over it, one by one, in the second act).
# Exit status 0 when every check passed. The agent's log: $VM_OUT/agent.log
# (written to the guest's tmpfs while it runs: over 9p, another process's
# appends show up late).
#
# Under qemu's software emulation every process start costs up to a second
# on a loaded machine: timing and polling use bash builtins, the network is
# set up with a few `ip -batch` runs, one python3 serves all pods.
# Functions below are called indirectly (wait_for, alive).
# shellcheck disable=SC2317
set -u
bin="$1" examples="$2"
net="${BASH_SOURCE[0]%/*}/demo-net.py"
out="${VM_OUT:?run by guest-init.sh}"
work=/tmp/demo
dir="$work/manifests"
mkdir -p "$work/ready" "$dir"
agent_log="$work/agent.log"
trap 'cp "$agent_log" "$out/agent.log" 2>/dev/null' EXIT

usec() { echo "${EPOCHREALTIME/./}"; }
t0=$(usec)
since() { # START_USEC -> seconds since, one decimal
  local d=$((($(usec) - $1) / 100000))
  printf '%d.%d' $((d / 10)) $((d % 10))
}
banner() { printf '\n=== [%5s s] %s\n' "$(since "$t0")" "$*"; }
# sleep without a process: read with a timeout on a pipe nobody writes to.
exec {nap_fd}<> <(:)
nap() { read -r -t "$1" -u "$nap_fd" _ || :; }
checks=() failed=0
record() { # PASS|FAIL DESCRIPTION
  checks+=("$1  $2")
  [ "$1" = PASS ] || failed=1
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
  : >"$work/results"
  python3 "$net" tally "$work/results" "${args[@]}"
  mapfile -t res <"$work/results"
  for i in "${!descs[@]}"; do
    if [ "${res[$i]:-1}" = 0 ]; then record PASS "${descs[$i]}"; else record FAIL "${descs[$i]}"; fi
  done
}
# wait_for SECONDS COMMAND...: poll (0.2 s) until COMMAND succeeds; gives up
# after SECONDS, or at once when COMMAND returns 2.
wait_for() {
  local limit=$(($1 * 1000000)) start rc
  shift
  start=$(usec)
  while :; do
    "$@"
    rc=$?
    [ "$rc" -eq 0 ] && return 0
    [ "$rc" -eq 2 ] && return 1
    [ $(($(usec) - start)) -ge "$limit" ] && return 1
    nap 0.2
  done
}
# alive COMMAND...: 2 when the agent has exited, else COMMAND's 0 or 1.
alive() {
  kill -0 "$agent" 2>/dev/null || return 2
  "$@" && return 0
  return 1
}
# No source flags: `show` asks the running agent on its control socket.
show() { "$bin" show "$@"; }
# ipvs_has LINE...: `ipvsadm -Sn` has every LINE (as a substring).
ipvs_has() {
  local rules line
  rules="$(ipvsadm -Sn 2>/dev/null)" || return 1
  for line in "$@"; do [[ $rules == *"$line"* ]] || return 1; done
}
ipvs_lacks() { ! ipvs_has "$1"; }
all_ready() {
  local p
  for p in a b c d; do [ -e "$work/ready/pod-$p" ] || return 1; done
}

# --- the node and its pods -----------------------------------------------------
banner "node-a: this VM (uplink0 10.0.2.15); four pods on bridge cni0, each answering with its name"
batch="link add cni0 type bridge
link set cni0 up
addr add 10.244.0.1/24 dev cni0"
pods=()
for p in a b c d; do
  ip="10.244.0.$((${#pods[@]} + 11))"
  pods+=("pod-$p=$ip")
  batch+="
netns add pod-$p
link add veth-$p type veth peer name eth0 netns pod-$p
link set veth-$p master cni0 up"
  printf 'pod-%s  %s  HTTP :8080, UDP :5353\n' "$p" "$ip"
done
ip -batch - <<<"$batch" || exit 1
for pod in "${pods[@]}"; do
  ip -n "${pod%=*}" -batch - <<EOF &
link set lo up
link set eth0 up
addr add ${pod#*=}/24 dev eth0
route add default via 10.244.0.1
EOF
done
for p in a b c d; do wait -n || exit 1; done
t_pods=$(usec)
python3 "$net" serve "$work/ready" "${pods[@]}" &
if wait_for 60 all_ready; then
  echo "(pods listening $(since "$t_pods") s after python3 started)"
else
  echo "the pods did not come up in 60 s"
  exit 1
fi

# --- the agent -------------------------------------------------------------------
cp "$examples"/manifests/*.yaml "$dir/"
banner "ipvs-proxy --manifests $dir   (copied from examples/manifests/)"
grep -h '^# ' "$dir"/*.yaml | sed 's/^# /  /'
: >"$agent_log"
t_start=$(usec)
"$bin" --manifests "$dir" --hostname-override node-a --cluster-cidr 10.244.0.0/16 \
  --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256 \
  >>"$agent_log" 2>&1 &
agent=$!
if wait_for 120 alive ipvs_has '-A -t 10.96.0.10:80' '-A -t 10.96.0.11:80' '-A -u 10.96.0.53:53' \
  '-a -t 10.96.0.10:80 -r 10.244.0.13:8080' '-a -t 10.96.0.11:80 -r 10.244.0.13:8080' \
  '-a -u 10.96.0.53:53 -r 10.244.0.13:5353'; then
  echo "all three Services programmed $(since "$t_start") s after the agent started"
else
  echo "the agent did not program the Services (exited, or not within 120 s); its log:"
  tail -n 30 "$agent_log"
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
banner "a long-lived connection to web, kept open across the edit"
coproc HOLD { exec python3 "$net" hold 10.96.0.10 80 pod-c; }
held_before=""
[ -n "${HOLD[0]:-}" ] && read -r -t 60 -u "${HOLD[0]}" held_before
echo "opened (HTTP/1.1 keep-alive), answered by: ${held_before:-nothing}"

banner "edit web.yaml: pod-c replaced by pod-d (written aside, then renamed in)"
for f in "$examples"/manifests-edit/*.yaml; do
  diff -U0 "$dir/${f##*/}" "$f" | grep -v -E '^(@@|--- |\+\+\+ )' | sed 's/^/  /'
done
mapfile -t before <"$agent_log"
t_edit=$(usec)
for f in "$examples"/manifests-edit/*.yaml; do
  cp "$f" "$dir/.${f##*/}.tmp" && mv "$dir/.${f##*/}.tmp" "$dir/${f##*/}"
done
moved() {
  ipvs_has '-a -t 10.96.0.10:80 -r 10.244.0.14:8080 -m -w 1' &&
    ipvs_lacks '-a -t 10.96.0.10:80 -r 10.244.0.13:8080 -m -w 1'
}
what="the edit programmed within 60 s (pod-d in, pod-c out of rotation)"
if wait_for 60 alive moved; then
  echo "programmed $(since "$t_edit") s after the rename; the agent logged:"
  record PASS "$what"
else
  echo "the edit was not programmed in 60 s; the agent logged:"
  record FAIL "$what"
fi
# The forwarding changes since the edit, without the timestamp and target.
tail -n +$((${#before[@]} + 1)) "$agent_log" | grep -E ' INFO .*(servers?|address) ' |
  sed -E 's/^[^ ]+ +INFO [^ ]+: /  /'

banner "ipvs-proxy show default/web"
show default/web
echo "(pod-c drains at weight 0: no new connections; the open one (active 1) and"
echo " the closed ones IPVS still tracks in TIME_WAIT (inactive) keep it until they"
echo " are gone, or until --drain-period)"

banner "traffic again"
held_after=""
if [ -n "${HOLD[1]:-}" ] && echo >&"${HOLD[1]}"; then
  read -r -t 30 -u "${HOLD[0]}" held_after
fi
echo "the connection opened before the edit, asked again: ${held_after:-no answer}"
if [ "$held_before" = pod-c ] && [ "$held_after" = pod-c ]; then
  record PASS "the connection opened before the edit still works, answered by pod-c (draining)"
else
  record FAIL "the connection opened before the edit still works, answered by pod-c (draining)"
fi
tallies \
  "web after the edit: 30 requests spread evenly over pod-a, pod-b, pod-d, none to pod-c" \
  tcp 10.96.0.10 80 30 pod-a=10,pod-b=10,pod-d=10 \
  "web-sticky (not edited): 12 requests still all answered by one pod" \
  tcp 10.96.0.11 80 12 one=12
if kill -0 "$agent" 2>/dev/null; then record PASS "the agent ran throughout"; else
  record FAIL "the agent ran throughout (it exited; log: $out/agent.log)"
fi

banner "checks"
printf '%s\n' "${checks[@]}"
kill "$agent" 2>/dev/null
wait "$agent" 2>/dev/null
if [ "$failed" -eq 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
exit "$failed"
