#!/usr/bin/env python3
"""Summarises a dhat-rs heap profile (dhat-heap.json, written by the agent
built with `--features dhat-heap`): the heap at its global peak (t-gmax)
by category and the top allocation sites by bytes live at that peak.

    dhat_top.py dhat-heap.json [TOP] [--rev GITREV]

A site's category is decided by the first frame, from the allocation up,
that matches a rule below (module paths of the agent and its libraries),
matched against the frame's function and, for the agent's own crates, the
text of its source line (read from the work tree, or from GITREV: the
revision the profiled binary was built from), since inlined functions
leave only their caller's frame; "other" when none does. Bytes are dhat's: requested sizes, without the
allocator's own overhead or fragmentation (RSS is larger).
"""
import json
import os
import re
import subprocess
import sys

# (category, regex on a frame), tried per frame from the allocation upward.
RULES = [
    ("kernel model (dry run only)", r"ModelKernel|self\.node\.apply"),
    ("shadow (the kernel as last read and applied)", r"s\.apply\(&plan\)|shadow"),
    ("logs (tracing)", r"tracing_subscriber|ipvs_proxy::logging"),
    ("nft table text", r"dataplane::nft"),
    ("change queue (objects waiting for the sync loop)", r"tokio::sync::mpsc"),
    ("plan (per sync)", r"proxy_core::plan|proxy_core::diff"),
    ("desired state (proxy-core)", r"proxy_core::state|proxy_core::translate|proxy_core::parse|proxy_core::model"),
    ("proxier bookkeeping (owners, identities, rejections)", r"ipvs_proxy::proxier|ipvs_proxy::sync|ipvs_proxy::events"),
    ("cluster source: decoded objects, tracker",
     r"ipvs_proxy::source::(watch_kind|Tracker|run_cluster|Lean|ServiceWire|SliceWire)|kube_runtime::watcher"),
    ("manifest source (read, parse, index)", r"ipvs_proxy::source"),
    ("kube client: list/watch bodies and decoding", r"kube_client|kube_core|serde_json"),
    ("HTTP / TLS buffers", r"hyper|h2::|rustls|tokio_util::codec|bytes::"),
    ("metrics (prometheus)", r"prometheus|ipvs_proxy::metrics"),
    ("runtime (tokio)", r"tokio::"),
]
RULES = [(c, re.compile(r)) for c, r in RULES]
# Frames that do not decide: their caller does (the kernel model and the
# shadow are both an `Observed`).
PASS = re.compile(r"proxy_core::plan::Observed")
SKIP = re.compile(r"dhat::|alloc::alloc|alloc::raw_vec|__rust|core::ops::function|std::alloc|\[root\]")


CRATES = {"ipvs_proxy": "agent", "proxy_core": "proxy-core", "dataplane": "dataplane"}
REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
_sources = {}


def source_line(crate_dir, path, line, rev):
    key = (crate_dir, path, rev)
    if key not in _sources:
        rel = path if path.startswith(crate_dir + "/") else f"{crate_dir}/{path}"
        try:
            if rev:
                text = subprocess.run(["git", "-C", REPO, "show", f"{rev}:{rel}"], capture_output=True,
                                      text=True, check=True).stdout
            else:
                text = open(os.path.join(REPO, rel)).read()
            _sources[key] = text.splitlines()
        except (OSError, subprocess.CalledProcessError):
            _sources[key] = []
    lines = _sources[key]
    return lines[line - 1].strip() if 0 < line <= len(lines) else ""


def func(frame, rev=None):
    """'0xADDR: path::to::func (file:line:col)' -> the function, plus
    ' | <source line>' for frames of the agent's crates."""
    f = frame.split(": ", 1)[-1]
    m = re.search(r" \(([^()]*):(\d+):\d+\)$", f)
    name = re.sub(r" \(.*\)$", "", f)
    if m:
        crate = re.match(r"<?(\w+)::", name)
        crate_dir = CRATES.get(crate.group(1)) if crate else None
        if crate_dir:
            text = source_line(crate_dir, m.group(1), int(m.group(2)), rev)
            if text:
                return f"{name} | {text}"
    return name


def main():
    args = sys.argv[1:]
    rev = None
    if "--rev" in args:
        i = args.index("--rev")
        rev = args[i + 1]
        del args[i:i + 2]
    path = args[0]
    top = int(args[1]) if len(args) > 1 else 25
    d = json.load(open(path))
    ftbl = d["ftbl"]
    cats = {}
    sites = []
    for pp in d["pps"]:
        gb = pp.get("gb", 0)
        frames = [func(ftbl[i], rev) for i in pp["fs"]]
        cat = "other"
        for fr in frames:
            if PASS.search(fr):
                continue
            for c, r in RULES:
                if r.search(fr):
                    cat = c
                    break
            if cat != "other":
                break
        cats.setdefault(cat, [0, 0])
        cats[cat][0] += gb
        cats[cat][1] += pp.get("tb", 0)
        shown = [f for f in frames if not SKIP.search(f)][:4]
        sites.append((gb, pp.get("mb", 0), pp.get("tb", 0), cat, shown))
    total = sum(v[0] for v in cats.values())
    print(f"# {path}: heap at t-gmax {total / 1e6:.2f} MB in {len(d['pps'])} sites"
          f" (dhat: requested bytes; allocated in all {sum(v[1] for v in cats.values()) / 1e6:.1f} MB)")
    print()
    print("| where | bytes at peak | share | allocated in all |")
    print("|---|---|---|---|")
    for c, (gb, tb) in sorted(cats.items(), key=lambda x: -x[1][0]):
        print(f"| {c} | {gb / 1e6:.2f} MB | {100 * gb / max(total, 1):.0f}% | {tb / 1e6:.1f} MB |")
    print()
    print(f"Top {top} sites by bytes at peak:")
    print()
    for gb, mb, tb, cat, shown in sorted(sites, key=lambda x: -x[0])[:top]:
        if gb == 0:
            break
        print(f"- {gb / 1e6:.2f} MB at peak (max {mb / 1e6:.2f} MB, all {tb / 1e6:.1f} MB) [{cat}]")
        for f in shown:
            print(f"    {f[:160]}")


if __name__ == "__main__":
    main()
