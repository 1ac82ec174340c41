#!/usr/bin/env python3
"""Print N TCP services x M masqueraded real servers in `ipvsadm -Sn` form."""
import sys


def main() -> None:
    n, m = int(sys.argv[1]), int(sys.argv[2])
    if not (1 <= n <= 65000 and 1 <= m <= 50):
        sys.exit("usage: gen_rules.py N(1..65000) M(1..50)")
    out = []
    for i in range(1, n + 1):
        hi, lo = i >> 8, i & 255
        svc = f"-t 10.1.{hi}.{lo}:80"
        out.append(f"-A {svc} -s rr")
        for j in range(m):
            out.append(f"-a {svc} -r 10.{200 + j}.{hi}.{lo}:8080 -m -w 1")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
