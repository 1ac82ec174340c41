#!/usr/bin/env bash
# The demo, needing no cluster. Installs what it needs on a fresh
# Debian/Ubuntu machine (packages with apt-get, Rust with rustup).
#
#   bash scripts/demo.sh                    the agent (default)
#   bash scripts/demo.sh ipvsctl [RULES]    ipvsctl next to ipvsadm
#
# The agent demo boots a qemu VM (Debian's kernel: IPVS and nftables), puts
# four pods in network namespaces, runs `ipvs-proxy --manifests DIR` on
# examples/manifests/, sends real TCP and UDP requests to the Services,
# prints `ipvs-proxy show` and who answered, then applies
# examples/manifests-edit/ and shows the traffic move. Exits non-zero when a
# check fails (scripts/vm/demo-agent.sh lists them).
#
# The ipvsctl demo boots a user-mode-linux VM, runs `ipvsctl restore <
# examples/demo.rules` and shows `ipvsctl list` / `save` next to
# `ipvsadm -Ln` / `-Sn` (it fails when the saved rules differ).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$REPO"

# binary PACKAGE BIN PROFILE_FLAGS...: build it, print its path.
binary() {
  local pkg="$1" bin="$2" dir target_dir
  shift 2
  log "building $bin ($pkg${1:+, $1})"
  cargo build "$@" -p "$pkg" --bin "$bin" >&2
  dir=debug
  [ "${1:-}" = --release ] && dir=release
  target_dir="$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  [ -x "$target_dir/$dir/$bin" ] || die "no $target_dir/$dir/$bin after the build"
  echo "$target_dir/$dir/$bin"
}

# Guest console lines from our payload only: after guest-init's line (which
# may share its line with the firmware's last words: no newline in between),
# without the kernel's own messages and the noise of the power-off.
payload_lines() {
  awk 'go && !/^(sysrq|reboot): / && !/^\[ *[0-9]+\.[0-9]+\]/ && !/guest-init\.sh: line [0-9]+: / {
         print; fflush()
       }
       /guest-init: (qemu|uml) kernel / { go = 1 }'
}

demo_ipvsctl() {
  local rules ipvsctl out rc
  rules="$(realpath "${1:-examples/demo.rules}")"
  [ -r "$rules" ] || die "cannot read $rules"
  ipvsctl="$(binary ipvsctl ipvsctl --release)"
  out="$REPO/.vm/demo-ipvsctl"
  log "booting user-mode-linux"
  bash scripts/vm/uml.sh "$out" "$REPO/scripts/vm/demo-ipvsctl.sh" "$ipvsctl $rules" |
    payload_lines || warn "the VM run failed (above)"
  rc="$(cat "$out/payload.rc" 2>/dev/null || echo none)"
  [ "$rc" = 0 ] || die "the demo failed inside the VM (exit $rc; console: $out/console.log)"
  log "done: the VM booted in $(cat "$out/boot_uptime") s, whole run $(cat "$out/wall_seconds") s"
}

demo_agent() {
  local agent out rc start
  start=$(now)
  agent="$(binary ipvs-proxy ipvs-proxy)"
  out="$REPO/.vm/demo"
  bash scripts/vm/qemu.sh "$out" "$REPO/scripts/vm/demo-agent.sh" "$agent $REPO/examples" |
    payload_lines || warn "the VM run failed (above)"
  rc="$(cat "$out/payload.rc" 2>/dev/null || echo none)"
  [ "$rc" = 0 ] ||
    die "the demo failed inside the VM (exit $rc; console: $out/console.log, agent log: $out/agent.log)"
  log "done: VM $(cat "$out/wall_seconds") s (guest ready after $(cat "$out/ready_uptime") s), demo total $(elapsed "$start") s"
}

ensure_packages "${HOST_PACKAGES[@]}"
ensure_rust
case "${1:-agent}" in
  agent) demo_agent ;;
  ipvsctl)
    shift
    demo_ipvsctl "$@"
    ;;
  *) die "usage: $0 [agent | ipvsctl [RULES_FILE]]" ;;
esac
