# shellcheck shell=bash
# Helpers shared by scripts/test.sh, scripts/demo.sh and scripts/vm/*.sh.
# Source it; it defines functions and REPO, nothing runs on its own.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO

# Host packages the test command and the demo need (Debian/Ubuntu names).
HOST_PACKAGES=(
  user-mode-linux ipvsadm iproute2 kmod nftables strace
  qemu-system-x86 busybox-static cpio python3 curl ca-certificates
  gcc libc6-dev pkg-config procps xz-utils zstd
)

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
