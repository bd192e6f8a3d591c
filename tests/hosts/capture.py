#!/usr/bin/env python3
"""Captures the frames crossing one interface for a while (a raw AF_PACKET socket, no
tcpdump needed) and prints each of the given markers that appeared in them.

Usage: capture.py IFACE SECONDS MARKER...
Prints "ready" once capturing, then one line per marker seen, then "done".
"""
import socket
import sys
import time


def main():
    iface, seconds = sys.argv[1], float(sys.argv[2])
    markers = [m.encode() for m in sys.argv[3:]]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
    s.bind((iface, 0))
    s.settimeout(0.2)
    print("ready", flush=True)
    seen = set()
    frames = 0
    end = time.time() + seconds
    while time.time() < end:
        try:
            frame = s.recv(65536)
        except socket.timeout:
            continue
        frames += 1
        for m in markers:
            if m in frame:
                seen.add(m)
    for m in sorted(seen):
        print(m.decode(), flush=True)
    print(f"done {frames} frames", flush=True)


if __name__ == "__main__":
    main()
