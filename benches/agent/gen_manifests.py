#!/usr/bin/env python3
"""Manifests for the agent benchmark (see run.sh).

    gen_manifests.py N REALS CHANGES OUTDIR

OUTDIR/manifests/svc-NNNNN.yaml: one file per Service: a ClusterIP Service
(TCP 80 -> 8080) and its EndpointSlice with REALS ready endpoints (10.128.0.0/10), all on
other nodes (node-1..node-5; the agent runs as bench-node).
OUTDIR/changes/cK.yaml: CHANGES replacements of one of those files, each
with its first endpoint's address replaced by a new one (10.192.0.0/16).
OUTDIR/changes.txt: one line per change: FILE VIP:PORT NEW:PORT OLD:PORT.

    gen_manifests.py --filter N REALS CHANGES OUTDIR

(benches/filter/run.sh) the same manifests, except that CHANGES of the
Services are of type LoadBalancer (ingress IP 192.0.2.K+1, nodePort 31000+K,
loadBalancerSourceRanges [198.51.100.0/24]), plus CHANGES changes of each
kind in OUTDIR/filter-changes/ and one line per change in
OUTDIR/filter-changes.txt:
    KIND OP SRC DST IPVS_CHECKS NFT_CHECKS
KIND: endpoint (first endpoint address replaced), svc-add (a new ClusterIP
Service and its slice), svc-del (a Service's file removed), nodeport-add (a
new NodePort Service, nodePort 30000+K), lb-range (a LoadBalancer Service's
source range replaced by 100.64.K.0/24). OP: rename (SRC, a file in
filter-changes/, renamed over DST in the manifest directory) or unlink (DST
removed; SRC is "-"). The checks are `bench_probe watch` CHECKs, comma
separated, "-" for none, with "_" standing for a space.
"""
import os
import sys


def ip(second, idx):
    """10.(SECOND + x).y.z for idx = x * 65536 + y * 256 + z."""
    return f"10.{second + (idx >> 16)}.{(idx >> 8) & 255}.{idx & 255}"


def cluster_ip(i):
    # 10.96.0.0/12 from 10.96.0.1 upwards: 250 per /24, never .0 or .255.
    return f"10.{96 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"


def endpoint(i, j, reals):
    return ip(128, i * reals + j + 1)


def manifest(i, addrs, kind="ClusterIP", node_port=None, lb=None):
    """One Service and its slice. kind: ClusterIP, NodePort or
    LoadBalancer; lb = (ingress IP, source range) for LoadBalancer."""
    name = f"svc-{i:05d}"
    np = f", nodePort: {node_port}" if node_port else ""
    extra = ""
    status = ""
    if lb:
        extra = f"  loadBalancerSourceRanges: [{lb[1]}]\n"
        status = f"status:\n  loadBalancer:\n    ingress: [{{ip: {lb[0]}}}]\n"
    eps = "".join(
        f"- addresses: [\"{a}\"]\n"
        f"  conditions: {{ready: true, serving: true, terminating: false}}\n"
        f"  nodeName: node-{j % 5 + 1}\n"
        for j, a in enumerate(addrs)
    )
    return (
        "apiVersion: v1\n"
        "kind: Service\n"
        f"metadata: {{name: {name}, namespace: bench}}\n"
        "spec:\n"
        f"  type: {kind}\n"
        f"  clusterIP: {cluster_ip(i)}\n"
        f"  clusterIPs: [{cluster_ip(i)}]\n"
        "  ipFamilies: [IPv4]\n"
        "  ports:\n"
        f"  - {{name: http, port: 80, protocol: TCP, targetPort: 8080{np}}}\n"
        + extra
        + status
        + "---\n"
        "apiVersion: discovery.k8s.io/v1\n"
        "kind: EndpointSlice\n"
        "metadata:\n"
        f"  name: {name}-1\n"
        "  namespace: bench\n"
        f"  labels: {{kubernetes.io/service-name: {name}}}\n"
        "addressType: IPv4\n"
        "ports: [{name: http, port: 8080, protocol: TCP}]\n"
        "endpoints:\n" + eps
    )


def sp(s):
    return s.replace(" ", "_")


def filter_main(n, reals, changes, out):
    """The --filter variant (see the module's doc)."""
    if n < 8 * changes:
        sys.exit(f"--filter needs N >= 8 x CHANGES (N={n}, CHANGES={changes})")
    stride = n // changes
    # Per change K, distinct Services: base + 0 endpoint, + 1 deleted, + 2
    # LoadBalancer with a source range.
    base = [k * stride + stride // 2 for k in range(changes)]
    lbs = {b + 2: k for k, b in enumerate(base)}
    mdir = os.path.join(out, "manifests")
    cdir = os.path.join(out, "filter-changes")
    os.makedirs(mdir)
    os.makedirs(cdir)

    def lb_of(k, rng):
        return (f"192.0.2.{k + 1}", rng)

    for i in range(n):
        addrs = [endpoint(i, j, reals) for j in range(reals)]
        if i in lbs:
            k = lbs[i]
            text = manifest(i, addrs, "LoadBalancer", 31000 + k, lb_of(k, "198.51.100.0/24"))
        else:
            text = manifest(i, addrs)
        with open(os.path.join(mdir, f"svc-{i:05d}.yaml"), "w") as f:
            f.write(text)
    lines = []

    def add(kind, k, text, dst, ipvs, nft):
        src = f"{kind}-{k}.yaml"
        if text is None:
            src = "-"
        else:
            with open(os.path.join(cdir, src), "w") as f:
                f.write(text)
        op = "unlink" if text is None else "rename"
        lines.append(f"{kind} {op} {src} {dst} {','.join(ipvs) or '-'} {','.join(sp(c) for c in nft) or '-'}")

    for k in range(changes):
        i = base[k]
        vip = cluster_ip(i)
        addrs = [endpoint(i, j, reals) for j in range(reals)]
        old, new = addrs[0], ip(192, k + 1)
        addrs[0] = new
        add("endpoint", k, manifest(i, addrs), f"svc-{i:05d}.yaml",
            [f"ipvs-in:{vip}:80:{new}:8080", f"ipvs-out:{vip}:80:{old}:8080"], [])
    for k in range(changes):
        i = n + k
        vip = cluster_ip(i)
        addrs = [endpoint(i, j, reals) for j in range(reals)]
        add("svc-add", k, manifest(i, addrs), f"svc-{i:05d}.yaml",
            [f"ipvs-reals:{vip}:80:{reals}"], [f"nft-has:service-ports-v4:{vip} . tcp . 80"])
    for k in range(changes):
        i = base[k] + 1
        vip = cluster_ip(i)
        add("svc-del", k, None, f"svc-{i:05d}.yaml",
            [f"ipvs-gone:{vip}:80"], [f"nft-no:service-ports-v4:{vip} . tcp . 80"])
    for k in range(changes):
        i = n + changes + k
        vip = cluster_ip(i)
        addrs = [endpoint(i, j, reals) for j in range(reals)]
        port = 30000 + k
        add("nodeport-add", k, manifest(i, addrs, "NodePort", port), f"svc-{i:05d}.yaml",
            [f"ipvs-reals:{vip}:80:{reals}", f"ipvs-reals:10.0.2.15:{port}:{reals}"],
            [f"nft-has:nodeports-v4:tcp . {port}"])
    for k in range(changes):
        i = base[k] + 2
        addrs = [endpoint(i, j, reals) for j in range(reals)]
        lb_ip, rng = lb_of(k, f"100.64.{k}.0/24")
        add("lb-range", k, manifest(i, addrs, "LoadBalancer", 31000 + k, (lb_ip, rng)),
            f"svc-{i:05d}.yaml", [],
            [f"nft-list-has:lb-allowed-v4:{lb_ip} . tcp . 80 . {rng}",
             f"nft-list-no:lb-allowed-v4:{lb_ip} . tcp . 80 . 198.51.100.0/24"])
    with open(os.path.join(out, "filter-changes.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    if sys.argv[1] == "--filter":
        filter_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    n, reals, changes, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    mdir = os.path.join(out, "manifests")
    cdir = os.path.join(out, "changes")
    os.makedirs(mdir)
    os.makedirs(cdir)
    for i in range(n):
        addrs = [endpoint(i, j, reals) for j in range(reals)]
        with open(os.path.join(mdir, f"svc-{i:05d}.yaml"), "w") as f:
            f.write(manifest(i, addrs))
    lines = []
    for k in range(changes):
        # Spread over the services; each change hits a different one.
        i = (k * n) // changes + (n // (2 * changes))
        addrs = [endpoint(i, j, reals) for j in range(reals)]
        old = addrs[0]
        new = ip(192, k + 1)
        addrs[0] = new
        with open(os.path.join(cdir, f"c{k}.yaml"), "w") as f:
            f.write(manifest(i, addrs))
        lines.append(f"svc-{i:05d}.yaml {cluster_ip(i)}:80 {new}:8080 {old}:8080")
    with open(os.path.join(out, "changes.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
