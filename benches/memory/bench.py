#!/usr/bin/env python3
"""One run of the memory benchmark (see run.sh): the agent at one size in
one mode, its memory from /proc, its start-up and change times.

    bench.py AGENT MODE N REALS CHANGES OUTDIR [--dhat]

MODE: manifests (the agent reads OUTDIR/manifests, written here by
benches/agent/gen_manifests.py) or cluster (the agent watches
apiserver.py, started here, serving the same objects). The agent runs as
`--dry-run` (the in-memory kernel model), node bench-node, filter on (the
default), metrics on a free local port, no control socket or healthz.

Measured:
- complete: from the agent's start to the moment its /metrics show all
  N x REALS real servers (polled every 10 ms);
- steady: VmRSS 2 s after complete; peak: VmHWM then;
- CHANGES changes, one at a time: the first endpoint address of Service
  (k * 7919) mod N replaced by a new one (manifests: an atomic rename of the
  Service's file; cluster: a MODIFIED event from the stand-in; a Service's
  address alternates between two, so the state keeps its size); each timed
  to the agent's log line naming the new address (its `virtual server`
  line); VmRSS sampled every CHANGES/10 changes and 2 s after the last;
- with --dhat the agent (built with the dhat-heap feature) writes
  dhat-heap.json in OUTDIR on SIGTERM.

Writes OUTDIR/result.json.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "agent"))
import gen_manifests as gm  # noqa: E402


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[k] = int(v.split()[0])
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def metric(port, name):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        return None
    return None


class LogTail:
    def __init__(self, path):
        self.path = path
        self.off = 0
        self.buf = ""

    def wait_for(self, text, timeout):
        end = time.monotonic() + timeout
        while True:
            with open(self.path) as f:
                f.seek(self.off)
                chunk = f.read()
                self.off = f.tell()
            self.buf += chunk
            i = self.buf.find(text)
            if i >= 0:
                self.buf = self.buf[i + len(text):]
                return True
            self.buf = self.buf[-len(text):]
            if time.monotonic() > end:
                return False
            time.sleep(0.001)


def main():
    agent, mode, n, reals, changes, out = sys.argv[1:7]
    n, reals, changes = int(n), int(reals), int(changes)
    dhat = "--dhat" in sys.argv
    os.makedirs(out, exist_ok=True)
    res = {"mode": mode, "n": n, "reals": reals, "changes": changes, "dhat": dhat,
           "load_before": open("/proc/loadavg").read().split()[:3]}
    mport = free_port()
    args = [agent, "--dry-run", "--hostname-override", "bench-node",
            "--metrics-bind-address", f"127.0.0.1:{mport}", "--healthz-bind-address", "",
            "--control-socket", ""]
    api = None
    mdir = os.path.join(out, "manifests")
    if mode == "manifests":
        if not os.path.isdir(mdir):
            os.makedirs(mdir)
            for i in range(n):
                with open(os.path.join(mdir, f"svc-{i:05d}.yaml"), "w") as f:
                    f.write(gm.manifest(i, [gm.endpoint(i, j, reals) for j in range(reals)]))
        args += ["--manifests", mdir]
    else:
        portfile = os.path.join(out, "api.port")
        if os.path.exists(portfile):
            os.remove(portfile)
        api = subprocess.Popen([sys.executable, os.path.join(here, "apiserver.py"), str(n),
                                str(reals), portfile], stdout=subprocess.DEVNULL)
        for _ in range(6000):
            if os.path.exists(portfile):
                break
            time.sleep(0.01)
        aport = int(open(portfile).read())
        args += ["--master", f"http://127.0.0.1:{aport}"]
    log = os.path.join(out, "agent.log")
    env = dict(os.environ, RUST_LOG=os.environ.get("AGENT_RUST_LOG", "info"))
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "w"), cwd=out, env=env)
    want = n * reals
    try:
        while True:
            if p.poll() is not None:
                sys.exit(f"agent exited {p.returncode}: see {log}")
            v = metric(mport, "ipvs_proxy_real_servers")
            if v is not None and int(v) == want:
                break
            if time.monotonic() - t0 > 900:
                sys.exit(f"not complete after 900 s (real servers {v}, want {want})")
            time.sleep(0.01)
        res["complete_s"] = round(time.monotonic() - t0, 3)
        res["at_complete"] = status(p.pid)
        time.sleep(2)
        res["steady"] = status(p.pid)
        tail = LogTail(log)
        lat = []
        samples = []
        every = max(1, changes // 10)
        flip = {}
        for k in range(changes):
            i = (k * 7919) % n
            addrs = [gm.endpoint(i, j, reals) for j in range(reals)]
            # Each Service's first address alternates between two new ones,
            # so the state stays the same size and every change is a change.
            flip[i] = 1 - flip.get(i, 1)
            new = gm.ip(192, 1 + flip[i] * 32768 + i % 32768)
            addrs[0] = new
            t = time.monotonic()
            if mode == "manifests":
                tmp = os.path.join(mdir, f".c{k}.tmp")
                with open(tmp, "w") as f:
                    f.write(gm.manifest(i, addrs))
                t = time.monotonic()
                os.rename(tmp, os.path.join(mdir, f"svc-{i:05d}.yaml"))
            else:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{aport}/_bench/change?i={i}&addr={new}", method="POST")
                urllib.request.urlopen(req, timeout=10).read()
            if not tail.wait_for(f"{new}:8080", 60):
                sys.exit(f"change {k} (Service {i}, {new}) not seen in 60 s")
            lat.append(time.monotonic() - t)
            if (k + 1) % every == 0:
                samples.append((k + 1, status(p.pid)["VmRSS"]))
        time.sleep(2)
        res["after_changes"] = status(p.pid)
        res["rss_samples"] = samples
        lat.sort()
        if lat:
            res["change_ms"] = {
                "median": round(1000 * lat[len(lat) // 2], 2),
                "p90": round(1000 * lat[int(len(lat) * 0.9)], 2),
                "max": round(1000 * lat[-1], 2),
            }
        with open(f"/proc/{p.pid}/stat") as f:
            st = f.read().rsplit(")", 1)[1].split()
        res["cpu_s"] = round((int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK"), 2)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=600 if dhat else 30)
            except subprocess.TimeoutExpired:
                p.kill()
        if api is not None:
            api.terminate()
            api.wait()
    res["load_after"] = open("/proc/loadavg").read().split()[:3]
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
