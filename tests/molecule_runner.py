"""Run molecule scenarios in the background, several at once, while the rest of the
suite (lint, metadata, validation) runs in the foreground.

tests/conftest.py starts the runner as soon as pytest has collected the selected
molecule tests; each test_molecule_scenario then waits for its own scenario's result.
MOLECULE_JOBS (default 2) is how many scenarios run at once (1 = one after the other). A third
lane was tried on the 2-core machine (session 7): the load reached 15, each scenario ran about
1.6 times longer, and the suite took 46 min against an estimated 43 with two.
Scenarios start longest first (EXPECTED_SECONDS, measured), so the lanes end close
together. Container, network and volume names are per scenario (CONTRIBUTING.md), and
the shared wheelhouse download is serialized with flock, so scenarios do not collide.

Each log line is prefixed with the seconds since the scenario started, and the time
of every molecule action (create, prepare, converge, idempotence, verify, ...) is
collected for the report. Full logs are kept in .test-logs/molecule-<scenario>.log.
"""

import os
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".test-logs"
# A hung scenario fails, it does not hang CI: each scenario is killed after TIMEOUT, or at
# the suite's DEADLINE (seconds after the runner starts, MOLECULE_DEADLINE), whichever comes
# first, so that pytest still reports inside CI's 90 minutes (the venv is made before the
# runner starts, about 4 min; the images are built after it). The run at 2750972 lost e2e and
# mlflow_server to a 40-minute per-scenario limit: on this 2-core machine each takes 38-39 min
# while the rest of the suite (about 30 min of validation, lint and sanity runs) shares the CPU.
TIMEOUT = 60 * 60
DEADLINE = int(os.environ.get("MOLECULE_DEADLINE", 82 * 60))

# Measured in the clean-clone .ci/run of d207db6 on the 2-core test machine: two lanes, each
# scenario sharing the CPU with the other lane and, for the first ten minutes, the foreground
# tests. Only the order matters (longest first).
EXPECTED_SECONDS = {
    "e2e": 1668,
    "mlflow_server": 1377,
    "front_door": 592,
    "aws": 572,
    "upgrade": 410,
    "host_baseline": 161,
    "collection": 119,
}

_ACTION = re.compile(r"➜ (\w+): Executing")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Result:
    scenario: str
    rc: int
    elapsed: float
    started_at: float
    phases: list = field(default_factory=list)  # [(action, seconds)]
    log: Path = LOGS

    def summary(self):
        timing = ", ".join(f"{name} {secs:.0f}s" for name, secs in self.phases)
        return (f"molecule test -s {self.scenario}: rc={self.rc} in {self.elapsed:.0f} s, started "
                f"{self.started_at:.0f} s into the run ({timing}) (log: {self.log})")

    def tail(self, lines=150):
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def run_scenario(scenario, env, t0):
    LOGS.mkdir(exist_ok=True)
    log = LOGS / f"molecule-{scenario}.log"
    started = time.monotonic()
    limit = min(TIMEOUT, t0 + DEADLINE - started)
    marks = []  # [action, start offset]
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["molecule", "test", "-s", scenario],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            start_new_session=True,  # its own process group: a kill takes ansible and pytest with it
        )
        killer = threading.Timer(max(0.0, limit), os.killpg, (proc.pid, signal.SIGKILL))
        killer.start()
        try:
            for line in proc.stdout:
                offset = time.monotonic() - started
                out.write(f"[{offset:5.0f}s] {line}")
                out.flush()
                m = _ACTION.search(_ANSI.sub("", line))
                if m:
                    marks.append([m.group(1), offset])
            rc = proc.wait()
        finally:
            killer.cancel()
        if rc < 0:
            out.write(f"[{time.monotonic() - started:5.0f}s] molecule ended by signal {-rc}; its limit was {limit:.0f} s "
                      f"(TIMEOUT {TIMEOUT} s, or the suite's DEADLINE {DEADLINE} s after the runner started)\n")
    elapsed = time.monotonic() - started
    ends = [m[1] for m in marks[1:]] + [elapsed]
    phases = [(name, end - begin) for (name, begin), end in zip(marks, ends)]
    return Result(scenario, rc, elapsed, started - t0, phases, log)


class Runner:
    """Starts every scenario at once on a pool of MOLECULE_JOBS threads."""

    def __init__(self, scenarios, env, prepare):
        self.jobs = max(1, int(os.environ.get("MOLECULE_JOBS", "2")))
        self.t0 = time.monotonic()
        self._prepared = threading.Event()
        self._prepare_error = None
        self._pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="molecule")
        order = sorted(scenarios, key=lambda s: -EXPECTED_SECONDS.get(s, 300))
        self.futures: dict[str, Future] = {}
        threading.Thread(target=self._prepare, args=(prepare,), daemon=True).start()
        for s in order:
            self.futures[s] = self._pool.submit(self._run, s, env)

    def _prepare(self, prepare):
        try:
            prepare()
        except BaseException as exc:  # reported by every waiting test
            self._prepare_error = exc
        finally:
            self._prepared.set()

    def _run(self, scenario, env):
        self._prepared.wait()
        if self._prepare_error is not None:
            raise self._prepare_error
        return run_scenario(scenario, env, self.t0)

    def result(self, scenario) -> Result:
        return self.futures[scenario].result()

    def shutdown(self):
        self._pool.shutdown(wait=True, cancel_futures=True)
