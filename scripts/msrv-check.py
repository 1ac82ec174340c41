#!/usr/bin/env python3
"""Checks that each workspace member's declared `rust-version` is honest for
what cargo can see: its edition and the `rust-version` every dependency in its
resolved graph (normal and build dependencies, all features) declares.

Usage: cargo metadata --format-version 1 --all-features | scripts/msrv-check.py

The other half of the MSRV check is clippy's `incompatible_msrv` lint (denied
in the workspace's [workspace.lints.clippy]): it reads `rust-version` and
rejects standard-library items stabilised later. Neither half compiles with the
old toolchain itself: language features and dependencies that declare no
`rust-version`, or declare one too low, are not seen (docs: ipvs-rs/README.md,
"Minimum supported Rust version").
"""
import json
import sys

EDITION_MIN = {"2015": (1, 0), "2018": (1, 31), "2021": (1, 56), "2024": (1, 85)}


def ver(s):
    return tuple(int(x) for x in s.split(".")[:2])


def main():
    meta = json.load(sys.stdin)
    pkgs = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    bad = []
    for member in meta["workspace_members"]:
        p = pkgs[member]
        if not p.get("rust_version"):
            bad.append(f"{p['name']}: no rust-version declared")
            continue
        declared = ver(p["rust_version"])
        if EDITION_MIN[p["edition"]] > declared:
            bad.append(f"{p['name']}: edition {p['edition']} needs Rust >= "
                       f"{'.'.join(map(str, EDITION_MIN[p['edition']]))}")
        # Walk the dependencies a user of this package builds (not dev).
        seen, todo, need = set(), [member], (0, 0)
        why = "-"
        while todo:
            cur = todo.pop()
            for dep in nodes[cur]["deps"]:
                kinds = {k["kind"] for k in dep["dep_kinds"]}
                if kinds <= {"dev"} or dep["pkg"] in seen:
                    continue
                seen.add(dep["pkg"])
                todo.append(dep["pkg"])
                d = pkgs[dep["pkg"]]
                if d.get("rust_version") and ver(d["rust_version"]) > need:
                    need, why = ver(d["rust_version"]), f"{d['name']} {d['version']}"
        status = "ok" if need <= declared else "TOO LOW"
        print(f"{p['name']}: rust-version {p['rust_version']}, edition {p['edition']}; "
              f"{len(seen)} dependencies, highest rust-version {'.'.join(map(str, need))} "
              f"({why}): {status}")
        if need > declared:
            bad.append(f"{p['name']}: declares {p['rust_version']} but {why} needs "
                       f"{'.'.join(map(str, need))}")
    if bad:
        print("MSRV check failed:\n  " + "\n  ".join(bad), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
