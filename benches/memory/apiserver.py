#!/usr/bin/env python3
"""An API server stand-in for the memory benchmark (see run.sh).

    apiserver.py N REALS PORTFILE [--node NAME]

Serves, on 127.0.0.1 (a free port, written to PORTFILE once listening), the
same N Services and N EndpointSlices as benches/agent/gen_manifests.py
writes, in the shape a real API server returns them after `kubectl apply`
of those manifests: uid, resourceVersion, creationTimestamp, generation,
kubectl's last-applied-configuration annotation, managedFields, the
server's defaults (sessionAffinity, ipFamilyPolicy, internalTrafficPolicy,
status), and list items without apiVersion/kind. Plus the Node NAME.

Wire format, as the agent's kube-rs client sees a real server:
- lists (`GET /api/v1/services`, `/apis/discovery.k8s.io/v1/endpointslices`,
  `/api/v1/nodes`) are paged: `limit` objects per page, an opaque
  `continue` token and `remainingItemCount` while more remain, the list's
  `resourceVersion` in every page; `labelSelector` (kube-proxy's
  `!a,!b` form) and `fieldSelector=metadata.name=X` are applied;
- `watch=true&resourceVersion=RV` streams (chunked, one JSON event per
  line) the events after RV, then new ones as they happen, a BOOKMARK
  every 30 s, and ends after `timeoutSeconds`; an RV older than the
  event log answers `ERROR 410 Expired` as the real server does;
- any other POST (Events from the agent) is answered 201.

Control (for the benchmark driver, not part of the API):
- `POST /_bench/change?i=I&addr=A`: the EndpointSlice of Service I gets A
  as its first endpoint address; a MODIFIED event goes to the watches.
"""
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent"))
from gen_manifests import cluster_ip, endpoint  # noqa: E402

SERVICES = "/api/v1/services"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
NODES = "/api/v1/nodes"
KINDS = {
    SERVICES: ("v1", "Service", "ServiceList"),
    SLICES: ("discovery.k8s.io/v1", "EndpointSlice", "EndpointSliceList"),
    NODES: ("v1", "Node", "NodeList"),
}
CREATED = "2026-12-01T10:00:00Z"
EVENT_LOG = 100_000


def applied(obj):
    """kubectl's last-applied-configuration: the manifest as JSON."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n"


def fields_v1(obj, skip=("apiVersion", "kind", "status")):
    """managedFields' FieldsV1 for the fields of a manifest (a faithful
    shape: f:field per key, {} at the leaves; lists as k:/v: keys)."""

    def walk(v):
        if isinstance(v, dict):
            return {f"f:{k}": walk(x) for k, x in v.items() if k not in skip}
        if isinstance(v, list):
            out = {}
            for x in v:
                if isinstance(x, dict):
                    key = {k: x[k] for k in ("port", "protocol") if k in x}
                    if not key:
                        key = {"addresses": x.get("addresses", [])}
                    out["k:" + json.dumps(key, separators=(",", ":"))] = dict(walk(x), **{".": {}})
                else:
                    out["v:" + json.dumps(x)] = {}
            return out
        return {}

    return walk(obj)


def meta(name, namespace, rv, manifest, labels=None):
    m = {
        "name": name,
        "namespace": namespace,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{name}/{manifest['kind']}")),
        "resourceVersion": str(rv),
        "creationTimestamp": CREATED,
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied(manifest)},
        "managedFields": [
            {
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": manifest["apiVersion"],
                "time": CREATED,
                "fieldsType": "FieldsV1",
                "fieldsV1": dict(
                    fields_v1({k: v for k, v in manifest.items() if k != "metadata"}),
                    **{"f:metadata": {"f:annotations": {
                        ".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                        **({"f:labels": {f"f:{k}": {} for k in labels}} if labels else {})}},
                ),
            }
        ],
    }
    if labels:
        m["labels"] = labels
    return m


def service(i, rv):
    name = f"svc-{i:05d}"
    ip = cluster_ip(i)
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ipFamilies": ["IPv4"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
    }
    return {
        "metadata": meta(name, "bench", rv, manifest),
        "spec": dict(
            manifest["spec"],
            sessionAffinity="None",
            ipFamilyPolicy="SingleStack",
            internalTrafficPolicy="Cluster",
        ),
        "status": {"loadBalancer": {}},
    }


def slice_of(i, reals, rv, first=None):
    name = f"svc-{i:05d}"
    addrs = [endpoint(i, j, reals) for j in range(reals)]
    if first:
        addrs[0] = first
    eps = [
        {
            "addresses": [a],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": f"node-{j % 5 + 1}",
        }
        for j, a in enumerate(addrs)
    ]
    labels = {"kubernetes.io/service-name": name}
    manifest = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-1", "namespace": "bench", "labels": labels},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }
    m = meta(f"{name}-1", "bench", rv, manifest, labels)
    m["generation"] = 1
    return {"metadata": m, "addressType": "IPv4", "endpoints": eps, "ports": manifest["ports"]}


def node(name, rv):
    return {
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, "node/" + name)),
            "resourceVersion": str(rv),
            "creationTimestamp": CREATED,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.2.15"},
                                 {"type": "Hostname", "address": name}]},
    }


def selected(obj, label_selector, field_selector):
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, (label_selector or "").split(",")):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif term not in labels:
            return False
    for term in filter(None, (field_selector or "").split(",")):
        k, _, v = term.partition("=")
        if k == "metadata.name" and obj["metadata"]["name"] != v.lstrip("="):
            return False
    return True


class Store:
    def __init__(self, n, reals, node_name):
        self.lock = threading.Condition()
        self.rv = 1000
        self.reals = reals
        self.objects = {SERVICES: {}, SLICES: {}, NODES: {}}
        # (rv, path, obj, line) of every change, the last EVENT_LOG.
        self.events = []
        for i in range(n):
            self.objects[SERVICES][f"bench/svc-{i:05d}"] = self._text(SERVICES, service(i, self._next()))
            self.objects[SLICES][f"bench/svc-{i:05d}-1"] = self._text(SLICES, slice_of(i, reals, self._next()))
        self.objects[NODES][node_name] = self._text(NODES, node(node_name, self._next()))
        self.oldest = self.rv

    def _next(self):
        self.rv += 1
        return self.rv

    @staticmethod
    def _text(path, obj):
        """(object, its JSON as a list item, its JSON with apiVersion/kind)."""
        av, kind, _ = KINDS[path]
        item = json.dumps(obj, separators=(",", ":"))
        full = json.dumps(dict(obj, apiVersion=av, kind=kind), separators=(",", ":"))
        return obj, item, full

    def change(self, i, addr):
        with self.lock:
            key = f"bench/svc-{i:05d}-1"
            if key not in self.objects[SLICES]:
                return None
            rv = self._next()
            t = self._text(SLICES, slice_of(i, self.reals, rv, addr))
            self.objects[SLICES][key] = t
            self.events.append((rv, SLICES, t[0], '{"type":"MODIFIED","object":%s}\n' % t[2]))
            if len(self.events) > EVENT_LOG:
                self.oldest = self.events[0][0]
                del self.events[: len(self.events) - EVENT_LOG]
            self.lock.notify_all()
            return rv


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store = None

    def log_message(self, fmt, *args):  # quiet
        pass

    def send_json(self, code, body):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        u = urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if u.path == "/_bench/change":
            q = parse_qs(u.query)
            rv = self.store.change(int(q["i"][0]), q["addr"][0])
            if rv is None:
                self.send_json(404, '{"error":"no such slice"}')
            else:
                self.send_json(200, json.dumps({"resourceVersion": str(rv)}))
            return
        self.send_json(201, "{}")

    def do_GET(self):
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        if u.path not in KINDS:
            self.send_json(404, '{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}')
            return
        if q.get("watch") in ("true", "1"):
            self.watch(u.path, q)
        else:
            self.list(u.path, q)

    def list(self, path, q):
        st = self.store
        av, _, list_kind = KINDS[path]
        limit = int(q.get("limit") or 0)
        start = int(q.get("continue") or 0)
        with st.lock:
            rv = st.rv
            items = [t for _, t in sorted(st.objects[path].items())
                     if selected(t[0], q.get("labelSelector"), q.get("fieldSelector"))]
        page = items[start:start + limit] if limit else items[start:]
        end = start + len(page)
        md = {"resourceVersion": str(rv)}
        if end < len(items):
            md["continue"] = str(end)
            md["remainingItemCount"] = len(items) - end
        body = '{"kind":"%s","apiVersion":"%s","metadata":%s,"items":[%s]}' % (
            list_kind, av, json.dumps(md), ",".join(t[1] for t in page))
        self.send_json(200, body)

    def chunk(self, text):
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def watch(self, path, q):
        st = self.store
        since = int(q.get("resourceVersion") or 0)
        timeout = min(int(q.get("timeoutSeconds") or 290), 290)
        bookmarks = q.get("allowWatchBookmarks") == "true"
        av, kind, _ = KINDS[path]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + 30
        try:
            with st.lock:
                if since and since < st.oldest:
                    self.chunk(json.dumps({"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": f"too old resource version: {since} ({st.oldest})",
                        "reason": "Expired", "code": 410}}) + "\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
            while True:
                with st.lock:
                    now = time.monotonic()
                    if now >= deadline:
                        break
                    todo = [(rv, line) for rv, p, obj, line in st.events
                            if rv > since and p == path
                            and selected(obj, q.get("labelSelector"), q.get("fieldSelector"))]
                    if not todo:
                        since = max(since, st.rv)
                        st.lock.wait(min(deadline, next_bookmark) - now)
                        now = time.monotonic()
                        if bookmarks and now >= next_bookmark:
                            next_bookmark = now + 30
                            bm = '{"type":"BOOKMARK","object":{"apiVersion":"%s","kind":"%s",' \
                                 '"metadata":{"resourceVersion":"%d"}}}\n' % (av, kind, st.rv)
                            todo = [(st.rv, bm)]
                if todo:
                    for rv, line in todo:
                        self.chunk(line)
                        since = max(since, rv)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    n, reals, portfile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    node_name = "bench-node"
    if "--node" in sys.argv:
        node_name = sys.argv[sys.argv.index("--node") + 1]
    Handler.store = Store(n, reals, node_name)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, portfile)
    srv.serve_forever()


if __name__ == "__main__":
    main()
