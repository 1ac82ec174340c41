#!/usr/bin/env python3
"""Manifests for the agent benchmark (see run.sh).

    gen_manifests.py N REALS CHANGES OUTDIR

OUTDIR/manifests/svc-NNNNN.yaml: one file per Service: a ClusterIP Service
(TCP 80 -> 8080) and its EndpointSlice with REALS ready endpoints (10.128.0.0/10), all on
other nodes (node-1..node-5; the agent runs as bench-node).
OUTDIR/changes/cK.yaml: CHANGES replacements of one of those files, each
with its first endpoint's address replaced by a new one (10.192.0.0/16).
OUTDIR/changes.txt: one line per change: FILE VIP:PORT NEW:PORT OLD:PORT.
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


def manifest(i, addrs):
    name = f"svc-{i:05d}"
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
        "  type: ClusterIP\n"
        f"  clusterIP: {cluster_ip(i)}\n"
        f"  clusterIPs: [{cluster_ip(i)}]\n"
        "  ipFamilies: [IPv4]\n"
        "  ports:\n"
        "  - {name: http, port: 80, protocol: TCP, targetPort: 8080}\n"
        "---\n"
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


def main():
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
