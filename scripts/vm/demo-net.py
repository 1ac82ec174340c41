#!/usr/bin/env python3
"""Pods and client of the agent demo (scripts/demo.sh), run inside the VM.

    demo-net.py serve READY_DIR NAME=IP...
        The pods: one process per NAME, in network namespace NAME
        (/run/netns/NAME), serving HTTP on IP:8080 and UDP on IP:5353, both
        answering NAME. Each creates READY_DIR/NAME once its sockets listen;
        they run until killed.
    demo-net.py tally RESULTS tcp|udp VIP PORT N EXPECT [tcp|udp VIP PORT N EXPECT]...
        For each group: N requests to VIP:PORT, each on a fresh connection
        (TCP: one HTTP GET; UDP: one datagram from a fresh socket), and a
        line tallying who answered. EXPECT: "pod-a=10,pod-b=10" (exactly
        these counts), "one=N" (all N answered by one pod) or "-" (any).
        A group passes when every request was answered and the tally
        matches; RESULTS gets one line per group, "0" (passed) or "1".
    demo-net.py hold VIP PORT POD
        A long-lived HTTP/1.1 connection to VIP:PORT answered by POD: opens
        connections until one is (at most 6), prints POD; then sends one
        more request on it for every line read on stdin, printing who
        answered (or "failed: ..."). Exit 1 when no connection reached POD.

Standard library only (the guest's root is the host's, which has python3);
one interpreter for all pods and one per tally: every process start is slow
under qemu's software emulation.
"""

import ctypes
import os
import socket
import sys
import threading
from collections import Counter

TIMEOUT = 3.0
KEEPALIVE = 600.0
CLONE_NEWNET = 0x40000000


def serve_all(ready_dir, pods):
    libc = ctypes.CDLL(None, use_errno=True)
    children = []
    for pod in pods:
        name, _, ip = pod.partition("=")
        pid = os.fork()
        if pid == 0:
            try:
                fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {name}")
                os.close(fd)
                serve(name, ip, os.path.join(ready_dir, name))
            except BaseException as e:  # report, never return into the parent's loop
                print(f"pod {name}: {e}", file=sys.stderr, flush=True)
            os._exit(1)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


def serve(name, ip, ready_file):
    body = f"{name}\n".encode()

    def reply(version):
        return (
            version
            + b" 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )

    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((ip, 8080))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((ip, 5353))

    def answer_udp():
        while True:
            _, peer = udp.recvfrom(2048)
            udp.sendto(body, peer)

    def answer_tcp(conn):
        # HTTP/1.0: one answer, then close. HTTP/1.1: keep the connection
        # for more requests (the held connection of `hold`).
        with conn:
            conn.settimeout(KEEPALIVE)
            data = b""
            try:
                while True:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(2048)
                        if not chunk or len(data) > 8192:
                            return
                        data += chunk
                    head, _, data = data.partition(b"\r\n\r\n")
                    request_line = head.split(b"\r\n", 1)[0]
                    keep = request_line.endswith(b"HTTP/1.1")
                    conn.sendall(reply(b"HTTP/1.1" if keep else b"HTTP/1.0"))
                    if not keep:
                        return
            except OSError:
                pass

    threading.Thread(target=answer_udp, daemon=True).start()
    with open(ready_file, "w"):
        pass
    while True:
        conn, _ = tcp.accept()
        threading.Thread(target=answer_tcp, args=(conn,), daemon=True).start()


def ask_tcp(vip, port):
    with socket.create_connection((vip, port), timeout=TIMEOUT) as s:
        s.sendall(f"GET / HTTP/1.0\r\nHost: {vip}\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200"):
        raise OSError(f"bad answer {data[:60]!r}")
    return body.decode().strip()


def ask_again(conn, vip):
    """One HTTP/1.1 request on an open connection (a file from makefile("rwb"))."""
    conn.write(f"GET / HTTP/1.1\r\nHost: {vip}\r\n\r\n".encode())
    conn.flush()
    status = conn.readline()
    if not status.startswith(b"HTTP/1.1 200"):
        raise OSError(f"bad answer {status[:60]!r}")
    length = 0
    while True:
        line = conn.readline()
        if not line:
            raise OSError("connection closed")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return conn.read(length).decode().strip()


def hold(vip, port, want):
    """Opens connections to VIP:PORT until one is answered by WANT (at most
    6), keeps it, prints who answered; then one more request on it per line
    read on stdin, printing who answered or "failed: ..."."""
    for _ in range(6):
        sock = socket.create_connection((vip, port), timeout=TIMEOUT)
        sock.settimeout(KEEPALIVE)
        conn = sock.makefile("rwb")
        try:
            who = ask_again(conn, vip)
        except (OSError, ValueError) as e:
            print(f"failed: {e}", flush=True)
            return 1
        if who == want:
            break
        conn.close()
        sock.close()
    else:
        print(f"failed: no connection reached {want} in 6 tries", flush=True)
        return 1
    print(who, flush=True)
    for _ in sys.stdin:
        try:
            print(ask_again(conn, vip), flush=True)
        except (OSError, ValueError) as e:
            print(f"failed: {e}", flush=True)
    return 0


def ask_udp(vip, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.sendto(b"who?", (vip, port))
        data, _ = s.recvfrom(2048)
    return data.decode().strip()


def parse_expect(expect):
    """EXPECT -> None (any), ("one", N) or a dict pod -> count; ValueError if malformed."""
    if expect == "-":
        return None
    if expect.startswith("one="):
        return ("one", int(expect[4:]))
    want = {}
    for item in expect.split(","):
        pod, sep, count = item.partition("=")
        if not pod or not sep:
            raise ValueError(f"bad EXPECT item {item!r}")
        want[pod] = int(count)
    return want


def matches(tally, n, want):
    if want is None:
        return True
    if isinstance(want, tuple):
        return len(tally) == 1 and sum(tally.values()) == want[1] == n
    return dict(tally) == want


def tally(proto, vip, port, n, want):
    ask = ask_tcp if proto == "tcp" else ask_udp
    answers = Counter()
    errors = Counter()
    for _ in range(n):
        try:
            answers[ask(vip, port)] += 1
        except (OSError, ValueError) as e:  # ValueError: an answer not in UTF-8
            errors[str(e) or type(e).__name__] += 1
    counts = "  ".join(f"{pod} {c:>2}" for pod, c in sorted(answers.items()))
    line = f"{n} x {proto.upper()} {vip}:{port}  ->  {counts or 'no answer'}"
    if errors:
        line += "  failed " + ", ".join(f"{c} ({e})" for e, c in errors.items())
    print(line, flush=True)
    return 0 if not errors and matches(answers, n, want) else 1


def main(argv):
    if len(argv) == 4 and argv[0] == "hold" and argv[2].isdigit():
        return hold(argv[1], int(argv[2]), argv[3])
    if len(argv) >= 3 and argv[0] == "serve" and all("=" in p for p in argv[2:]):
        serve_all(argv[1], argv[2:])
        return 0
    if len(argv) >= 7 and argv[0] == "tally" and (len(argv) - 2) % 5 == 0:
        groups = []
        for i in range(2, len(argv), 5):
            proto, vip, port, n, expect = argv[i : i + 5]
            if proto not in ("tcp", "udp"):
                return usage(f"bad protocol {proto!r}")
            try:
                groups.append((proto, vip, int(port), int(n), parse_expect(expect)))
            except ValueError as e:
                return usage(str(e))
        with open(argv[1], "w") as results:
            for g in groups:
                results.write(f"{tally(*g)}\n")
        return 0
    return usage()


def usage(problem=None):
    if problem:
        print(f"demo-net.py: {problem}", file=sys.stderr)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
