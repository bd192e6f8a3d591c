#!/usr/bin/env python3
"""TCP connect scan, run from a host outside the cluster: prints `ADDR:PORT` for every
port that accepts a connection. Non-blocking connects, many at once, each given up
after TIMEOUT seconds (a dropped SYN), so that 65,535 ports of an address take
seconds.

Usage: scan.py TIMEOUT FIRST_PORT LAST_PORT ADDR...
"""
import errno
import resource
import selectors
import socket
import sys

BATCH = 4000


def scan(addr, ports, timeout):
    open_ports = []
    for i in range(0, len(ports), BATCH):
        sel = selectors.DefaultSelector()
        socks = []
        for port in ports[i : i + BATCH]:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((addr, port))
            if err in (0, errno.EINPROGRESS):
                sel.register(s, selectors.EVENT_WRITE, port)
                socks.append(s)
            else:
                s.close()
        pending = len(socks)
        while pending:
            events = sel.select(timeout)
            if not events:
                break
            for key, _ in events:
                s = key.fileobj
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    open_ports.append(key.data)
                sel.unregister(s)
                pending -= 1
        for s in socks:
            s.close()
        sel.close()
    return sorted(open_ports)


def main():
    timeout = float(sys.argv[1])
    first, last = int(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, BATCH + 256), hard))
    for addr in sys.argv[4:]:
        for port in scan(addr, list(range(first, last + 1)), timeout):
            print(f"{addr}:{port}", flush=True)


if __name__ == "__main__":
    main()
