#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it; CI runs it as root on a
# clean clone). On a fresh Debian/Ubuntu machine it installs what it needs, then:
#   1. lint:   cargo fmt --check, cargo clippy -D warnings (incl. incompatible_msrv),
#              the MSRV check (scripts/msrv-check.py), cargo doc -D warnings
#   2. host:   cargo test --workspace (no kernel features)
#   3. kernel: tests/kernel_*.rs of every crate with feature `kernel-tests`,
#              built on the host, run as root in ONE user-mode-linux boot
#   4. e2e:    tests/e2e_*.rs of every crate with feature `e2e-tests`,
#              run in ONE qemu boot of Debian's kernel (nftables needs it)
# and exits non-zero if anything failed. A VM that cannot start is a failure,
# never a skip.
#
# Knobs for local iterations (CI sets none):
#   SKIP_LINT=1              skip stage 1
#   ONLY=host|kernel|e2e     run only that stage (no lint either)
#   VM_TIMEOUT=SECONDS       kill a VM after this long (default 1800 UML, 2700 qemu)
#   VM_TEST_TIMEOUT=SECONDS  per test binary inside a VM (default 1200)
# Results and logs go to .vm/ in the repository (gitignored).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$REPO"

ONLY="${ONLY:-}"
case "$ONLY" in
  "" | host | kernel | e2e) ;;
  *) die "ONLY must be host, kernel or e2e (got '$ONLY')" ;;
esac
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

total_start=$(now)
VMDIR="$REPO/.vm"
mkdir -p "$VMDIR"
summary=()
failed=0
stage_t0=$(now)
begin() { stage_t0=$(now); } # start timing the next recorded line
record() { # record ok|FAIL "line": one summary line, with its stage's time
  summary+=("$2 [$(elapsed "$stage_t0") s]")
  [ "$1" = ok ] || failed=1
}

# --- setup ---------------------------------------------------------------------
ensure_packages "${HOST_PACKAGES[@]}"
ensure_rust
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
target_dir="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
# The VMs see the host's files at the same paths, except /tmp and /run.
for d in "$REPO" "$target_dir"; do
  case "$d" in
    /tmp | /tmp/* | /run | /run/*)
      die "$d is under /tmp or /run, which the test VMs replace with their own tmpfs; use a checkout and CARGO_TARGET_DIR elsewhere" ;;
  esac
done

# --- 1. lint -------------------------------------------------------------------
if [ -z "$ONLY" ] && [ "${SKIP_LINT:-0}" != 1 ]; then
  log "lint: cargo fmt --all --check"
  begin
  if cargo fmt --all --check; then record ok "fmt: ok"; else record FAIL "fmt: FAILED (run cargo fmt --all)"; fi
  log "lint: cargo clippy --workspace --all-targets --all-features -- -D warnings"
  begin
  if cargo clippy --workspace --all-targets --all-features -- -D warnings; then
    record ok "clippy: ok"
  else
    record FAIL "clippy: FAILED"
  fi
  log "lint: MSRV: rust-version against editions and dependencies (scripts/msrv-check.py)"
  begin
  if cargo metadata --format-version 1 --all-features | python3 scripts/msrv-check.py; then
    record ok "msrv: ok (rust-version >= every dependency's; clippy incompatible_msrv denied)"
  else
    record FAIL "msrv: FAILED (see scripts/msrv-check.py output)"
  fi
  log "lint: cargo doc --workspace --no-deps (warnings are errors)"
  begin
  if RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features; then
    record ok "doc: ok"
  else
    record FAIL "doc: FAILED"
  fi
fi

# --- 2. host tests -------------------------------------------------------------
if want host; then
  log "host tests: cargo test --workspace"
  begin
  host_log="$VMDIR/host-tests.log"
  set +e
  cargo test --workspace 2>&1 | tee "$host_log"
  rc=${PIPESTATUS[0]}
  set -e
  read -r p f < <(sum_libtest "$host_log")
  if [ "$rc" -eq 0 ]; then
    record ok "host tests: $p passed, $f failed"
  else
    record FAIL "host tests: $p passed, $f failed (cargo test exit $rc; log $host_log)"
  fi
fi

# --- 3./4. tests in VMs ----------------------------------------------------------

# Packages that declare FEATURE and have test targets named PREFIX*.
packages_with() { # FEATURE PREFIX
  cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
feature, prefix = sys.argv[1], sys.argv[2]
for p in json.load(sys.stdin)["packages"]:
    if feature in p["features"] and any(
        "test" in t["kind"] and t["name"].startswith(prefix) for t in p["targets"]
    ):
        print(p["name"])
' "$1" "$2"
}

# Build the PREFIX* test binaries of packages declaring FEATURE and write the
# list the guest runs (ID<TAB>EXECUTABLE<TAB>PACKAGE_DIR) to LIST.
build_vm_tests() { # FEATURE PREFIX LIST
  local feature="$1" prefix="$2" list="$3" pkgs=() args=() features="" p
  mapfile -t pkgs < <(packages_with "$feature" "$prefix")
  : >"$list"
  [ "${#pkgs[@]}" -eq 0 ] && return 0
  for p in "${pkgs[@]}"; do
    args+=(-p "$p")
    features+="${features:+,}$p/$feature"
  done
  log "building ${prefix}* tests of: ${pkgs[*]}"
  cargo test --no-run --message-format=json-render-diagnostics \
    "${args[@]}" --features "$features" --test "${prefix}*" >"$list.json" || return 1
  # Kernel tests may run their package's examples (ipvs-rs/tests/kernel_examples.rs
  # finds them in target/<profile>/examples/).
  log "building the examples of: ${pkgs[*]}"
  cargo build --examples "${args[@]}" --features "$features" || return 1
  python3 - "$prefix" "$list.json" >"$list" <<'EOF'
import json, os, sys
prefix, path = sys.argv[1], sys.argv[2]
seen = set()
for line in open(path):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    target = msg["target"]
    if "test" not in target["kind"] or not target["name"].startswith(prefix):
        continue
    pkg_dir = os.path.dirname(msg["manifest_path"])
    ident = os.path.basename(pkg_dir) + "." + target["name"]
    if ident not in seen:
        seen.add(ident)
        print(ident, msg["executable"], pkg_dir, sep="\t")
EOF
  # Called as `if ! build_vm_tests ...`, where `set -e` does not apply: every
  # failure has to be returned by hand. Packages that have such tests but no
  # binary built is a failure too, never "0 passed".
  [ -s "$list" ] || {
    warn "no ${prefix}* test binary was built for: ${pkgs[*]}"
    return 1
  }
}

# Run the binaries listed in OUT/tests.list in one boot of VM (uml|qemu) and
# record a summary line LABEL.
run_vm_tests() { # LABEL VM OUT
  local label="$1" vm="$2" out="$3" n p f id rc bad=0 boot wall name details=()
  name=$([ "$vm" = uml ] && echo UML || echo qemu)
  n=$(grep -c . "$out/tests.list" || true)
  log "$label: $n test binaries, booting $name"
  if ! bash "scripts/vm/$vm.sh" "$out" "$REPO/scripts/vm/run-tests.sh"; then
    record FAIL "$label: FAILED - the $name VM did not run (see above; logs in $out)"
    return 0
  fi
  boot=$(cat "$out/boot_uptime")
  wall=$(cat "$out/wall_seconds")
  while IFS=$'\t' read -r id _ _; do
    rc=$(cat "$out/tests/$id.rc" 2>/dev/null || echo missing)
    if [ "$rc" != 0 ]; then
      bad=$((bad + 1))
      details+=("    $id: exit $rc (log $out/tests/$id.log)")
    fi
  done <"$out/tests.list"
  read -r p f < <(shopt -s nullglob && sum_libtest "$out"/tests/*.log)
  local line="$label: $p passed, $f failed in $n binaries ($name, boot ${boot} s, VM total ${wall} s)"
  if [ "$bad" -eq 0 ] && [ "$(cat "$out/payload.rc")" = 0 ]; then
    record ok "$line"
  else
    record FAIL "$line - $bad binaries FAILED"
  fi
  summary+=("${details[@]}")
}

vm_stage() { # LABEL DIRNAME VM FEATURE PREFIX
  local label="$1" out="$VMDIR/$2" vm="$3" feature="$4" prefix="$5"
  begin
  rm -rf "$out"
  mkdir -p "$out"
  if ! build_vm_tests "$feature" "$prefix" "$out/tests.list"; then
    record FAIL "$label: FAILED to build the ${prefix}* test binaries"
    return 0
  fi
  run_vm_tests "$label" "$vm" "$out"
}

if want kernel; then
  vm_stage "kernel tests" kernel uml kernel-tests kernel_
fi
if want e2e; then
  vm_stage "e2e tests" e2e qemu e2e-tests e2e_
fi

# --- summary -------------------------------------------------------------------
echo
echo "==================== summary ===================="
printf '%s\n' "${summary[@]}"
echo "total: $(elapsed "$total_start") s"
if [ "$failed" -ne 0 ]; then
  echo "RESULT: FAILED"
  exit 1
fi
echo "RESULT: ok"
