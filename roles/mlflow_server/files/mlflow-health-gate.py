#!/usr/bin/env python3
# Managed by Ansible (role mlflow_server). ExecStartPost= of the MLflow unit, as its user and in its sandbox.
"""Wait until URL answers 200, for at most TIMEOUT seconds.

  mlflow-health-gate.py URL TIMEOUT

systemd counts ExecStartPost= as part of the start: `systemctl start` / `restart` returns only
once the server is healthy, and fails (and the unit with it) when it is not healthy in time. So a
rolling restart that waits for each `systemctl restart` restarts the next server only after the
previous one serves again.
"""

import sys
import time
import urllib.error
import urllib.request


def main():
    url, timeout = sys.argv[1], float(sys.argv[2])
    # Straight to the local server: never through a proxy from the unit's environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = time.monotonic()
    last = "no answer"
    while True:
        try:
            with opener.open(url, timeout=5) as resp:
                if resp.status == 200:
                    print(f"{url} answered 200 after {time.monotonic() - start:.1f} s")
                    return 0
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() - start >= timeout:
            print(f"{url} did not answer 200 within {timeout:g} s (last: {last})", file=sys.stderr)
            return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
