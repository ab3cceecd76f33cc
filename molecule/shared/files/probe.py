#!/usr/bin/env python3
"""Poll a URL every 0.2 s and log each change between answering (HTTP 200) and not, as JSON
lines {"t": epoch seconds, "up": bool, "detail": ...}: the downtime an upgrade causes.

  probe.py URL OUT PIDFILE [MAX_SECONDS]

It detaches at once (a session of its own, so nothing that ends the task or playbook that
started it takes it along), after creating OUT and writing its pid to PIDFILE; it stops by
itself after MAX_SECONDS (default 3600), so a failed scenario does not leave it behind.
"""

import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request


def poll(url, out, max_seconds):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + max_seconds
    state = None
    with open(out, "a", buffering=1) as fh:
        while time.monotonic() < deadline:
            try:
                with opener.open(url, timeout=2) as resp:
                    up, detail = resp.status == 200, resp.status
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                up, detail = False, str(getattr(exc, "reason", exc))
            if up != state:
                fh.write(json.dumps({"t": time.time(), "up": up, "detail": str(detail)}) + "\n")
                state = up
            time.sleep(0.2)


def main():
    url, out, pidfile = sys.argv[1:4]
    max_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 3600.0
    open(out, "a").close()
    pid = os.fork()
    if pid:
        with open(pidfile, "w") as fh:
            fh.write(f"{pid}\n")
        return
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    poll(url, out, max_seconds)


if __name__ == "__main__":
    main()
