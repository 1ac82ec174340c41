#!/usr/bin/env python3
"""Summarises a dhat-rs heap profile (dhat-heap.json, written by the agent
built with `--features dhat-heap`): the heap at its global peak (t-gmax)
by category and the top allocation sites by bytes live at that peak.

    dhat_top.py dhat-heap.json [TOP]

A site's category is decided by the first frame, from the allocation up,
that matches a rule below (module paths of the agent and its libraries);
"other" when none does. Bytes are dhat's: requested sizes, without the
allocator's own overhead or fragmentation (RSS is larger).
"""
import json
import re
import sys

# (category, regex on a frame), tried per frame from the allocation upward.
RULES = [
    ("logs (tracing)", r"tracing_subscriber|ipvs_proxy::logging"),
    ("nft table text", r"dataplane::nft"),
    ("change queue (objects waiting for the sync loop)", r"tokio::sync::mpsc"),
    ("plan (per sync)", r"proxy_core::plan|proxy_core::diff"),
    ("desired state (proxy-core)", r"proxy_core::state|proxy_core::translate|proxy_core::parse|proxy_core::model"),
    ("shadow / kernel model (Observed)", r"proxy_core::observed|ModelKernel|<proxy_core::.*Observed|Observed as core::clone"),
    ("proxier bookkeeping (owners, identities, rejections)", r"ipvs_proxy::proxier|ipvs_proxy::sync|ipvs_proxy::events"),
    ("manifest source (read, parse, index)", r"ipvs_proxy::source::.*(manifest|Manifest|parse_file|read_file|Doc|refresh)"),
    ("cluster source: decoded objects, tracker", r"ipvs_proxy::source|kube_runtime::watcher"),
    ("kube client: list/watch bodies and decoding", r"kube_client|kube_core|serde_json"),
    ("HTTP / TLS buffers", r"hyper|h2::|rustls|tokio_util::codec|bytes::"),
    ("metrics (prometheus)", r"prometheus|ipvs_proxy::metrics"),
    ("runtime (tokio)", r"tokio::"),
]
RULES = [(c, re.compile(r)) for c, r in RULES]
SKIP = re.compile(r"dhat::|alloc::alloc|alloc::raw_vec|__rust|core::ops::function|std::alloc|\[root\]")


def func(frame):
    # "0xADDR: path::to::func (file:line:col)"
    f = frame.split(": ", 1)[-1]
    return re.sub(r" \(.*\)$", "", f)


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    d = json.load(open(path))
    ftbl = d["ftbl"]
    cats = {}
    sites = []
    for pp in d["pps"]:
        gb = pp.get("gb", 0)
        frames = [func(ftbl[i]) for i in pp["fs"]]
        cat = "other"
        for fr in frames:
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
