#!/usr/bin/env python3
"""Writes seed inputs for the netlink_replies target: answers shaped as the
kernel sends them (service and real-server dumps, config/info/daemon
replies, ACKs, errors with extended-ACK text, GETFAMILY), in the target's
input format: [kind u8][first seq u32 LE][span u8][cuts u8][cuts x u16 LE][datagrams].
Usage: netlink_seeds.py OUTDIR"""
import os
import struct
import sys

NLMSG_ERROR, NLMSG_DONE = 2, 3
F_MULTI, F_CAPPED, F_ACK_TLVS = 2, 0x100, 0x200
FAMILY = 0x21  # a resolved IPVS family id


def pad(b):
    return b + b"\0" * (-len(b) % 4)


def nla(kind, value):
    return pad(struct.pack("<HH", 4 + len(value), kind) + value)


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def nlmsg(kind, flags, seq, payload):
    return pad(struct.pack("<IHHII", 16 + len(payload), kind, flags, seq, 0) + payload)


def genl(cmd, attrs):
    return bytes([cmd, 1, 0, 0]) + attrs


def stats(wide):
    put = u64 if wide else u32
    return b"".join(nla(k, put(v)) for k, v in [(1, 5), (2, 100), (3, 90), (4, 6400), (5, 5000), (6, 1), (7, 2), (8, 3), (9, 4), (10, 5)])


def service(af=2, proto=6, addr=bytes([10, 96, 0, 1]) + b"\0" * 12, port=80, fwmark=None, pe=None):
    a = nla(1, u16(af))
    if fwmark is None:
        a += nla(2, u16(proto)) + nla(3, addr) + nla(4, struct.pack(">H", port))
    else:
        a += nla(5, u32(fwmark))
    a += nla(6, b"rr\0") + nla(7, u32(0x2) + u32(0xFFFFFFFF)) + nla(8, u32(360))
    a += nla(9, u32(0xFFFFFFFF)) + nla(10, stats(False)) + nla(12, stats(True))
    if pe:
        a += nla(11, pe + b"\0")
    return nla(1, a)


def dest(af=2, addr=bytes([10, 0, 1, 2]) + b"\0" * 12, port=8080):
    a = nla(1, addr) + nla(2, struct.pack(">H", port)) + nla(3, u32(0)) + nla(4, u32(1))
    a += nla(5, u32(0)) + nla(6, u32(0)) + nla(7, u32(3)) + nla(8, u32(1)) + nla(9, u32(0))
    a += nla(10, stats(False)) + nla(11, u16(af)) + nla(12, stats(True))
    a += nla(13, bytes([1])) + nla(14, struct.pack(">H", 6080)) + nla(15, u16(1))
    return nla(2, a)


def seed(kind, datagrams, first=1, span=0):
    cuts, at = [], 0
    for d in datagrams[:-1]:
        at += len(d)
        cuts.append(at)
    head = bytes([kind]) + u32(first) + bytes([span, len(cuts)]) + b"".join(u16(c) for c in cuts)
    return head + b"".join(datagrams)


def done(seq, code=0):
    return nlmsg(NLMSG_DONE, F_MULTI, seq, struct.pack("<i", code))


def error(seq, code, text=None):
    req = struct.pack("<IHHII", 20, FAMILY, 5, seq, 0)
    if text is None:
        return nlmsg(NLMSG_ERROR, 0, seq, struct.pack("<i", code) + req)
    return nlmsg(NLMSG_ERROR, F_CAPPED | F_ACK_TLVS, seq, struct.pack("<i", code) + req + nla(1, text + b"\0"))


v6 = bytes.fromhex("fd000096000000000000000000000001")
seeds = {
    "services_dump": seed(1, [
        nlmsg(FAMILY, F_MULTI, 1, genl(1, service())) + nlmsg(FAMILY, F_MULTI, 1, genl(1, service(10, 17, v6, 53))),
        nlmsg(FAMILY, F_MULTI, 1, genl(1, service(fwmark=0x4000, pe=b"sip"))) + done(1),
    ]),
    "service_reply": seed(1, [nlmsg(FAMILY, 0, 1, genl(1, service())) + error(1, 0)]),
    "dests_dump_v4": seed(2, [
        nlmsg(FAMILY, F_MULTI, 7, genl(5, dest())) + nlmsg(FAMILY, F_MULTI, 7, genl(5, dest(port=8081))),
        done(7),
    ], first=7),
    "dests_dump_v6": seed(3, [nlmsg(FAMILY, F_MULTI, 1, genl(5, dest(10, bytes.fromhex("fd000001000000000000000000000002")))) + done(1)]),
    "config_reply": seed(0, [nlmsg(FAMILY, 0, 1, genl(12, nla(4, u32(900)) + nla(5, u32(120)) + nla(6, u32(300)))) + error(1, 0)]),
    "info_reply": seed(0, [nlmsg(FAMILY, 0, 1, genl(14, nla(1, u32(0x010201)) + nla(2, u32(4096)))) + error(1, 0)]),
    "daemons_dump": seed(0, [nlmsg(FAMILY, F_MULTI, 1, genl(9, nla(3,
        nla(1, u32(1)) + nla(2, b"eth0\0") + nla(3, u32(7)) + nla(4, u16(1472)) + nla(5, bytes([224, 0, 0, 81]))
        + nla(6, bytes(16)) + nla(7, u16(8848)) + nla(8, bytes([1]))))) + done(1)]),
    "batch_acks_errors": seed(0, [error(3, -17, b"destination already exists"), error(5, -2), error(6, 0)], first=1, span=5),
    "dump_error": seed(1, [done(1, -16)]),
    "stale_then_answer": seed(0, [nlmsg(FAMILY, 0, 9, genl(12, nla(4, u32(1)))) + error(9, 0) + error(10, 0)], first=10),
    "ctrl_family": seed(4, [nlmsg(0x10, 0, 1, genl(1, nla(2, b"IPVS\0") + nla(1, u16(FAMILY)))) + error(1, 0)]),
    "ctrl_enoent": seed(4, [error(1, -2)]),
}
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {out}")
