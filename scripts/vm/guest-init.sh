#!/bin/bash
# PID 1 inside the test VMs (UML and qemu). The guest's root filesystem is the
# host's "/" (hostfs or 9p), so this script, the test binaries and the output
# directory are the host's own files.
#
# The kernel command line carries one variable for us: vmjob=/ABS/job.env
# (written by scripts/vm/uml.sh or qemu.sh). It sets:
#   VM_KIND         uml | qemu
#   VM_OUT          host directory for results (must not be under /tmp or /run)
#   VM_MODULES      directory holding lib/modules/<uname -r> contents' parent
#                   (i.e. VM_MODULES/<uname -r>/modules.dep exists)
#   VM_PAYLOAD      bash script to run once the guest is set up
#   VM_PAYLOAD_ARGS optional arguments (one string, word-split)
# Results: VM_OUT/boot_uptime, VM_OUT/modules.txt, VM_OUT/setup.log,
# VM_OUT/payload.rc and, last, VM_OUT/status ("done").
# shellcheck disable=SC1090

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb

poweroff_now() {
  sync
  echo o >/proc/sysrq-trigger
  sleep 30
}

# Always mount our own proc/sys/dev: over 9p the host's mounted /proc is
# visible, and a "mountpoint" check would take it for ours.
mount -t proc proc /proc
read -r uptime _ </proc/uptime

if [ -z "${vmjob:-}" ] || [ ! -r "$vmjob" ]; then
  echo "guest-init: no readable vmjob= on the kernel command line" >&2
  poweroff_now
fi
set -a
. "$vmjob"
set +a
mkdir -p "$VM_OUT"
echo "$uptime" >"$VM_OUT/boot_uptime"
exec 3>"$VM_OUT/setup.log"

setup_fail() {
  echo "guest-init: setup failed: $*" | tee -a "$VM_OUT/setup.log" >&2
  echo 100 >"$VM_OUT/payload.rc"
  echo "setup-failed: $*" >"$VM_OUT/status"
  poweroff_now
}

# --- filesystems -----------------------------------------------------------
mount -t sysfs sys /sys || setup_fail "mount sysfs /sys"
# UML auto-mounts devtmpfs; qemu's initramfs moved its devtmpfs here. Make sure.
grep -q '^[^ ]* /dev devtmpfs' /proc/mounts || mount -t devtmpfs dev /dev 2>&3
mount -t tmpfs -o mode=1777 tmp /tmp || setup_fail "mount tmpfs /tmp"
mount -t tmpfs -o mode=0755 run /run || setup_fail "mount tmpfs /run"
# What udev would add: /dev/fd (bash's <(...) needs it), /dev/std*.
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
[ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin
[ -e /dev/stdout ] || ln -s /proc/self/fd/1 /dev/stdout
[ -e /dev/stderr ] || ln -s /proc/self/fd/2 /dev/stderr
mkdir -p /dev/shm
mount -t tmpfs -o mode=1777 shm /dev/shm 2>&3
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts 2>&3
[ -d /sys/fs/bpf ] && mount -t bpf bpf /sys/fs/bpf 2>&3
echo 1 >/proc/sys/kernel/sysrq
hostname "ipvs-test-$VM_KIND"

# --- kernel modules ----------------------------------------------------------
# The guest has no /lib/modules of its own: point modprobe at VM_MODULES, for
# us (modprobe -d), for test code that runs "modprobe" from PATH, and for the
# kernel's own module autoloading (/proc/sys/kernel/modprobe).
kver="$(uname -r)"
[ -e "$VM_MODULES/$kver/modules.dep" ] ||
  setup_fail "no modules for kernel $kver in $VM_MODULES"
real_modprobe="$(command -v modprobe)" || setup_fail "no modprobe binary"
mkdir -p /run/vm/lib /run/vm/bin
ln -s "$VM_MODULES" /run/vm/lib/modules
cat >/run/vm/bin/modprobe <<EOF
#!/bin/sh
exec $real_modprobe -d /run/vm "\$@"
EOF
chmod 755 /run/vm/bin/modprobe
export PATH="/run/vm/bin:$PATH"
echo /run/vm/bin/modprobe >/proc/sys/kernel/modprobe

# Required: a missing one fails the run. Optional: loaded when the kernel has it.
required_modules="ipv6 ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc
  ip_vs_lblcr ip_vs_dh ip_vs_sh ip_vs_sed ip_vs_nq ip_vs_fo ip_vs_ovf ip_vs_mh
  nf_conntrack dummy veth ipip ip_gre"
optional_modules="ip_vs_twos ip_vs_pe_sip ip_vs_ftp fou sit ip6_tunnel ip6_gre
  tun bridge br_netfilter xt_ipvs nf_tables nft_chain_nat nft_nat nft_masq
  nft_ct nft_reject_inet nft_fib_inet nft_fib_ipv4 nft_fib_ipv6 nft_limit
  nf_nat nf_conntrack_netlink"
: >"$VM_OUT/modules.txt"
# Few processes: every exec is slow under qemu's emulation. One sed reads
# which modules the kernel has (built in or loadable), names with "_".
declare -A kind
while read -r k name; do
  kind[${name//-/_}]=$k
done < <(sed -n -e 's#^\([^:]*/\)\?\([^/:]*\)\.ko[^:]*:.*#loadable \2#p' \
  "$VM_MODULES/$kver/modules.dep" &&
  sed -n -e 's#^\([^/]*/\)*\([^/]*\)\.ko$#builtin \2#p' "$VM_MODULES/$kver/modules.builtin")
present=""
for m in $optional_modules; do
  if [ -n "${kind[$m]:-}" ]; then present="$present $m"; else echo "absent $m (optional)" >>"$VM_OUT/modules.txt"; fi
done
# shellcheck disable=SC2086
if ! modprobe -a $required_modules 2>&3; then
  for m in $required_modules; do
    modprobe "$m" 2>&3 || setup_fail "required kernel module $m could not be loaded"
  done
fi
# shellcheck disable=SC2086
modprobe -a $present 2>&3 || true
for m in $required_modules $present; do
  if [ "${kind[$m]:-}" = builtin ]; then
    echo "builtin $m" >>"$VM_OUT/modules.txt"
  elif [ -d "/sys/module/$m" ]; then
    echo "loaded $m" >>"$VM_OUT/modules.txt"
  else
    echo "NOT LOADED $m" >>"$VM_OUT/modules.txt"
  fi
done

# --- network -----------------------------------------------------------------
# lo plus a dummy "uplink" with addresses and default routes (IPv4 and IPv6),
# so the kernel has a route to any real-server address a test programs.
{
  ip link set lo up &&
    ip link add uplink0 type dummy &&
    ip link set uplink0 up &&
    ip addr add 10.0.2.15/24 dev uplink0 &&
    ip route add default via 10.0.2.2 dev uplink0 &&
    ip -6 addr add fd00:10::15/64 dev uplink0 nodad &&
    ip -6 route add default via fd00:10::2 dev uplink0
} 2>&3 || setup_fail "network setup (lo, uplink0, default routes)"

exec 3>&-
read -r t_ready _ </proc/uptime
echo "$t_ready" >"$VM_OUT/ready_uptime"

# --- payload -----------------------------------------------------------------
echo "guest-init: $VM_KIND kernel $kver: init after ${uptime}s, set up after ${t_ready}s, running $VM_PAYLOAD"
# shellcheck disable=SC2086
bash "$VM_PAYLOAD" ${VM_PAYLOAD_ARGS:-}
echo "$?" >"$VM_OUT/payload.rc"
echo "done" >"$VM_OUT/status"
poweroff_now
