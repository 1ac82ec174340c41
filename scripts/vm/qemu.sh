#!/usr/bin/env bash
# Boot Debian's own kernel in qemu once (TCG: software emulation), with the
# host's "/" as the guest's root over 9p, run PAYLOAD inside (guest-init.sh),
# power off. Used for tests that need nftables, which UML's kernel lacks.
#
#   scripts/vm/qemu.sh OUTDIR PAYLOAD [PAYLOAD_ARGS]
#
# Same contract as uml.sh: exit 0 when the guest ran the payload and powered
# off (OUTDIR/payload.rc has the payload's result), 1 with the reason otherwise.
# The kernel package is fetched with `apt-get download` (not installed) and
# unpacked into VM_CACHE (default .vm/cache), with a busybox initramfs.
# Env: VM_TIMEOUT (s, default 2700), QEMU_MEM (MiB, 2048), QEMU_SMP (2),
# QEMU_ACCEL (tcg), QEMU_KERNEL_PKG (e.g. linux-image-6.1.0-28-amd64).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/../lib.sh"

[ $# -ge 2 ] || die "usage: $0 OUTDIR PAYLOAD [PAYLOAD_ARGS]"
out="$1"
vm_check_outdir "$out"
command -v qemu-system-x86_64 >/dev/null ||
  die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox not found (apt-get install busybox-static)"

cache="${VM_CACHE:-$REPO/.vm/cache}"
mkdir -p "$cache"

# --- the kernel: Debian's linux-image (Ubuntu: linux-image-virtual's parts) ---
deps_of() { # PACKAGE -> its direct Depends that are kernel image/module packages
  apt-cache depends "$1" 2>/dev/null |
    awk '/^ *Depends: linux-(image|modules)/ { print $2 }' | sort -u
}
kernel_packages() {
  local meta pkgs p
  if [ -n "${QEMU_KERNEL_PKG:-}" ]; then
    echo "$QEMU_KERNEL_PKG"
    deps_of "$QEMU_KERNEL_PKG" | grep '^linux-modules' || true
    return 0
  fi
  for meta in linux-image-amd64 linux-image-virtual linux-image-generic; do
    pkgs=$(deps_of "$meta" | grep -v -- '-unsigned-' || true)
    [ -n "$pkgs" ] || continue
    for p in $pkgs; do
      echo "$p"
      deps_of "$p" | grep '^linux-modules' || true
    done
    return 0
  done
  return 1
}

pkgs=$(kernel_packages || true)
if [ -z "$pkgs" ]; then
  apt_update_once
  pkgs=$(kernel_packages || true)
fi
[ -n "$pkgs" ] || die "cannot find a kernel package (linux-image-amd64 on Debian, linux-image-virtual on Ubuntu) in apt; set QEMU_KERNEL_PKG"
image_pkg=$(echo "$pkgs" | grep '^linux-image' | head -n 1)
[ -n "$image_pkg" ] || die "no linux-image package among: $pkgs"
kroot="$cache/$image_pkg"
if [ ! -f "$kroot/.unpacked" ]; then
  log "fetching the qemu guest kernel: $(echo "$pkgs" | tr '\n' ' ')"
  rm -rf "$kroot" "$cache/debs"
  mkdir -p "$kroot" "$cache/debs"
  # shellcheck disable=SC2086
  (cd "$cache/debs" && apt-get download -o APT::Sandbox::User=root $pkgs >&2) ||
    die "apt-get download $pkgs failed"
  for deb in "$cache"/debs/*.deb; do
    dpkg-deb -x "$deb" "$kroot"
  done
  rm -rf "$cache/debs"
  touch "$kroot/.unpacked"
fi
vmlinuz=$(find "$kroot/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n 1)
[ -n "$vmlinuz" ] || die "no vmlinuz in $kroot/boot"
kver="${vmlinuz##*/vmlinuz-}"
modules="$kroot/lib/modules"
[ -d "$modules/$kver" ] || modules="$kroot/usr/lib/modules"
[ -d "$modules/$kver" ] || die "no modules for $kver under $kroot"
modroot="${modules%/lib/modules}"
if [ ! -f "$modules/$kver/modules.dep" ]; then
  depmod -b "$modroot" "$kver" || die "depmod -b $modroot $kver failed"
fi

# --- the initramfs: busybox + the modules to mount the host's / over 9p -------
initrd="$cache/initrd-$kver.gz"
if [ ! -f "$initrd" ] || [ "$0" -nt "$initrd" ]; then
  log "building the initramfs for $kver"
  ird="$cache/initramfs"
  rm -rf "$ird"
  mkdir -p "$ird/bin" "$ird/modules" "$ird/proc" "$ird/sys" "$ird/dev" "$ird/newroot"
  cp "$busybox" "$ird/bin/busybox"
  : >"$ird/modules.list"
  while read -r kind path _; do
    [ "$kind" = insmod ] || continue
    name="${path##*/}"
    case "$name" in
      *.ko.xz) xz -dc "$path" >"$ird/modules/${name%.xz}" && name="${name%.xz}" ;;
      *.ko.zst) zstd -qdc "$path" >"$ird/modules/${name%.zst}" && name="${name%.zst}" ;;
      *) cp "$path" "$ird/modules/$name" ;;
    esac
    grep -qx "$name" "$ird/modules.list" || echo "$name" >>"$ird/modules.list"
  done < <(modprobe -d "$modroot" -S "$kver" --show-depends -a \
    virtio_pci 9pnet_virtio 9p)
  cat >"$ird/init" <<'EOF'
#!/bin/busybox sh
# initramfs: mount the host's / (9p tag host0) and switch into it, running
# $vminit (guest-init.sh) with the kernel command line's vmjob= in the env.
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t devtmpfs dev /dev
for m in $($bb cat /modules.list); do
  $bb insmod "/modules/$m" || echo "initramfs: insmod $m failed"
done
if ! $bb mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose host0 /newroot; then
  echo "initramfs: cannot mount the host's / over 9p (tag host0)"
  echo o >/proc/sysrq-trigger
  $bb sleep 30
fi
$bb mount -o move /dev /newroot/dev
$bb umount /proc
exec $bb switch_root /newroot "$vminit"
EOF
  chmod 755 "$ird/init"
  (cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd.new"
  mv "$initrd.new" "$initrd"
  rm -rf "$ird"
fi

# --- boot ------------------------------------------------------------------------
vm_write_job qemu "$out" "$modules" "$2" "${3:-}"
# passthrough keeps the guest's file ownership real; it needs host root.
security=passthrough
[ "$(id -u)" -eq 0 ] || security=none
accel="${QEMU_ACCEL:-tcg}"
[ "$accel" = tcg ] && accel="tcg,thread=multi"
log "booting qemu ($kver, ${QEMU_SMP:-2} CPUs, $accel)"
vm_boot qemu "$out" "${VM_TIMEOUT:-2700}" \
  qemu-system-x86_64 -m "${QEMU_MEM:-2048}" -smp "${QEMU_SMP:-2}" \
  -accel "$accel" -cpu max -nographic -no-reboot -nic none \
  -kernel "$vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 quiet panic=-1 vmjob=$out/job.env vminit=$REPO/scripts/vm/guest-init.sh" \
  -virtfs "local,path=/,mount_tag=host0,security_model=$security,multidevs=remap,id=host0"
