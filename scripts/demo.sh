#!/usr/bin/env bash
# The demo, needing no cluster: boot a user-mode-linux VM (its kernel has
# IPVS), program it with `ipvsctl restore < examples/demo.rules`, and show
# `ipvsctl list` / `ipvsctl save` next to the reference tool's `ipvsadm -Ln` /
# `ipvsadm -Sn`. Installs what it needs on a fresh Debian/Ubuntu machine.
#   bash scripts/demo.sh [RULES_FILE]
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$REPO"

rules="$(realpath "${1:-examples/demo.rules}")"
[ -r "$rules" ] || die "cannot read $rules"

ensure_packages "${HOST_PACKAGES[@]}"
ensure_rust
log "building ipvsctl (release)"
cargo build --release -p ipvsctl --bin ipvsctl
target_dir="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
ipvsctl="$target_dir/release/ipvsctl"
[ -x "$ipvsctl" ] || die "no $ipvsctl after the build"

out="$REPO/.vm/demo"
log "booting user-mode-linux"
# The guest's console carries the demo's output; hide the kernel's boot lines.
bash scripts/vm/uml.sh "$out" "$REPO/scripts/vm/demo-guest.sh" "$ipvsctl $rules" |
  sed -n '/^guest-init:/,/^sysrq: Power Off/p' | sed -e '1d' -e '$d'
rc="$(cat "$out/payload.rc")"
[ "$rc" -eq 0 ] || die "the demo failed inside the VM (exit $rc; console: $out/console.log)"
log "done: the VM booted in $(cat "$out/boot_uptime") s, whole run $(cat "$out/wall_seconds") s"
