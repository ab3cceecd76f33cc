#!/usr/bin/env python3
"""Poll a URL every 0.2 s and log each change between answering (HTTP 200) and not, as JSON
lines {"t": epoch seconds, "up": bool, "detail": ...}: the downtime an upgrade causes.

  probe.py URL OUT [--max-seconds 3600]

It stops by itself after --max-seconds, so a failed scenario does not leave it behind.
"""

import json
import sys
import time
import urllib.error
import urllib.request


def main():
    url, out = sys.argv[1], sys.argv[2]
    max_seconds = float(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--max-seconds" else 3600.0
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + max_seconds
    state = None
    with open(out, "a", buffering=1) as fh:
        while time.monotonic() < deadline:
            try:
                with opener.open(url, timeout=2) as resp:
                    up, detail = resp.status == 200, resp.status
            except (urllib.error.URLError, OSError) as exc:
                up, detail = False, str(getattr(exc, "reason", exc))
            if up != state:
                fh.write(json.dumps({"t": time.time(), "up": up, "detail": str(detail)}) + "\n")
                state = up
            time.sleep(0.2)


if __name__ == "__main__":
    main()
