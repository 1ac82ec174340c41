# shellcheck shell=bash
# Helpers shared by scripts/test.sh, scripts/demo.sh and scripts/vm/*.sh.
# Source it; it defines functions and REPO, nothing runs on its own.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO

# Host packages the test command and the demo need (Debian/Ubuntu names).
# shellcheck disable=SC2034 # used by the scripts that source this file
HOST_PACKAGES=(
  user-mode-linux ipvsadm iproute2 kmod nftables strace
  qemu-system-x86 busybox-static cpio python3 curl ca-certificates
  gcc libc6-dev pkg-config procps xz-utils zstd
)

# depmod, modprobe, ip live in sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root for: $* (not root and no sudo)"
  fi
}

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    APT_UPDATED=1
  fi
}

# Install the given Debian packages that are not installed yet.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "missing packages (${missing[*]}) and no apt-get: install them by hand"
  apt_update_once
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${missing[@]}" >&2
}

# A stable Rust toolchain with rustfmt and clippy. Installs rustup (minimal
# profile) when there is no cargo at all; Debian's own cargo is too old for us.
ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    log "no cargo found: installing the stable toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
      sh -s -- -y --profile minimal --component rustfmt,clippy >&2
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  local comp
  for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
      command -v rustup >/dev/null 2>&1 ||
        die "cargo $comp is missing and there is no rustup to add it"
      log "rustup component add $comp"
      rustup component add "$comp" >&2
    fi
  done
}

# Seconds since the epoch, with decimals.
now() { date +%s.%N; }
# elapsed START -> "12.3"
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Sum the libtest summaries ("test result: ok. 3 passed; 1 failed; ...") of
# the given log files. Prints "PASSED FAILED".
sum_libtest() {
  awk '/^test result: / {
         for (i = 1; i <= NF; i++) {
           if ($(i) ~ /^passed;?$/) p += $(i - 1)
           if ($(i) ~ /^failed;?$/) f += $(i - 1)
         }
       }
       END { printf "%d %d\n", p, f }' "$@" /dev/null
}

# --- VM runs (scripts/vm/uml.sh, qemu.sh) -------------------------------------

# vm_check_outdir OUT: OUT must be absolute and visible inside the guest.
vm_check_outdir() {
  case "$1" in
    /tmp | /tmp/* | /run | /run/*) die "OUTDIR $1 is hidden inside the guest (tmpfs)" ;;
    /*) ;;
    *) die "OUTDIR must be absolute: $1" ;;
  esac
}

# vm_write_job KIND OUT MODULES PAYLOAD PAYLOAD_ARGS: the file guest-init.sh
# reads (vmjob= on the kernel command line); clears the previous results.
vm_write_job() {
  local out="$2"
  mkdir -p "$out"
  rm -f "$out"/{status,payload.rc,boot_uptime,ready_uptime,modules.txt,setup.log,wall_seconds}
  cat >"$out/job.env" <<EOF
VM_KIND=$1
VM_OUT=$out
VM_MODULES=$3
VM_PAYLOAD=$4
VM_PAYLOAD_ARGS="$5"
VM_TEST_TIMEOUT=${VM_TEST_TIMEOUT:-1200}
EOF
}

# vm_boot NAME OUT TIMEOUT COMMAND...: run the VM COMMAND in its own session
# (so a hung VM and all its helper processes can be killed), console to
# OUT/console.log and, live, to stdout. Returns 0 when the guest wrote
# OUT/status "done"; otherwise says why on stderr and returns 1.
vm_boot() {
  local name="$1" out="$2" timeout_s="$3" console="$2/console.log" start pid tailpid
  shift 3
  start=$(now)
  : >"$console" # exists before tail opens it, whoever runs first
  setsid "$@" </dev/null >>"$console" 2>&1 &
  pid=$!
  # The console without carriage returns and terminal escapes.
  tail -n +1 -f "$console" --pid="$pid" 2>/dev/null |
    sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' &
  tailpid=$!
  local timed_out=0 deadline=$(($(date +%s) + timeout_s))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      timed_out=1
      warn "$name still running after ${timeout_s}s: killing it"
      kill -TERM -- "-$pid" 2>/dev/null || true
      sleep 5
      break
    fi
    sleep 1
  done
  # Also reaps helper processes a crashed VM left in its session.
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  wait "$tailpid" 2>/dev/null || true
  printf '%s\n' "$(elapsed "$start")" >"$out/wall_seconds"

  if [ "$timed_out" -eq 1 ]; then
    warn "$name timed out after ${timeout_s}s (console: $console)"
    return 1
  fi
  if [ ! -f "$out/status" ]; then
    tail -n 30 "$console" >&2 || true
    warn "$name did not start, or died before the guest finished (no $out/status; console: $console)"
    return 1
  fi
  if [ "$(cat "$out/status")" != "done" ]; then
    cat "$out/setup.log" >&2 || true
    warn "$name guest set-up failed: $(cat "$out/status") (see $out/setup.log, $out/modules.txt)"
    return 1
  fi
  return 0
}
