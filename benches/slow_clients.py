#!/usr/bin/env python3
"""Slow clients against a running tollgate: the slow-client figures in BENCHMARKS.md.

Opens COUNT connections to 127.0.0.1:PORT, each sending one byte of a request's headers a
second, and meanwhile times an ordinary `curl` GET /user once a second. Prints, once a second,
how many slow connections are still open (the server closes them at its header timeout), the
curl time, and the server's VmRSS; then the RSS once they are all gone.

    ulimit -n 1024   # both limits: the server's raise to the hard limit changes nothing
    target/release/tollgate &   # the memory store, default [server] keys
    python3 benches/slow_clients.py PID [COUNT] [PORT]

Everything goes to 127.0.0.1 and ends within about a minute.
"""

import asyncio
import subprocess
import sys
import time

PID = int(sys.argv[1])
COUNT = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 8000
REQUEST = b"GET /user HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User: slow-client-" + b"x" * 64 + b"\r\n\r\n"


def rss_kb():
    with open(f"/proc/{PID}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def server_fds():
    import os
    return len(os.listdir(f"/proc/{PID}/fd"))


open_now = 0
closed_at = []


async def slow(started):
    global open_now
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    except OSError:
        return
    open_now += 1
    try:
        for byte in REQUEST:
            writer.write(bytes([byte]))
            await writer.drain()
            # A closed connection shows as EOF within the second between bytes.
            try:
                data = await asyncio.wait_for(reader.read(1), 1.0)
                if data == b"":
                    break
            except asyncio.TimeoutError:
                pass
    except OSError:
        pass
    open_now -= 1
    closed_at.append(time.monotonic() - started)
    writer.close()


def curl_seconds(second):
    # A caller of its own each time, so the default policy (3 a minute) answers 200.
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
         "-H", f"X-User: ordinary-{second}", f"http://127.0.0.1:{PORT}/user", "--max-time", "5"],
        capture_output=True, text=True)
    code, seconds = out.stdout.split()
    return code, float(seconds)


async def main():
    idle = rss_kb()
    print(f"idle: VmRSS {idle} kB, {server_fds()} descriptors")
    started = time.monotonic()
    tasks = [asyncio.create_task(slow(started)) for _ in range(COUNT)]
    worst = 0.0
    peak = idle
    peak_fds = 0
    for second in range(60):
        await asyncio.sleep(1)
        code, seconds = await asyncio.to_thread(curl_seconds, second)
        worst = max(worst, seconds)
        rss = rss_kb()
        fds = server_fds()
        peak, peak_fds = max(peak, rss), max(peak_fds, fds)
        print(f"t={second + 1:2d}s slow open {open_now:4d}  server fds {fds:4d}  "
              f"curl {code} {seconds * 1000:6.1f} ms  VmRSS {rss} kB")
        if open_now == 0 and all(t.done() for t in tasks):
            break
    await asyncio.gather(*tasks)
    print(f"slow connections closed after {min(closed_at):.1f}..{max(closed_at):.1f} s")
    print(f"worst curl {worst * 1000:.1f} ms; peak server fds {peak_fds}")
    print(f"VmRSS idle {idle} kB, peak {peak} kB")
    for wait in (2, 10):
        await asyncio.sleep(wait if wait == 2 else wait - 2)
        after = rss_kb()
        print(f"VmRSS {wait} s after the last closed: {after} kB ({after / idle:.2f}x idle)")


asyncio.run(main())
