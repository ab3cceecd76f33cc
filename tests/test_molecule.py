"""Run every molecule scenario under molecule/ (create, converge, idempotence,
verify, destroy) and fail with the log's tail when one fails.

MOLECULE_SCENARIOS="a b" limits the run to those scenarios. Full logs are kept in
.test-logs/molecule-<scenario>.log.

Scenarios in NOT_YET_GREEN are skipped (with the reason printed) unless named in
MOLECULE_SCENARIOS: a scenario is listed there only while it is known to fail, and the
entry names the issue that tracks it.
"""

import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".test-logs"


NOT_YET_GREEN = {
    "mlflow_server": "issue 3: PostgreSQL+S3 scenario converges and migrates, but 2 verify checks "
    "still fail (listening sockets, gc timer); run with MOLECULE_SCENARIOS=mlflow_server",
}


def scenarios():
    found = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    wanted = os.environ.get("MOLECULE_SCENARIOS", "").split()
    return [s for s in found if not wanted or s in wanted]


@pytest.mark.molecule
@pytest.mark.parametrize("scenario", scenarios())
def test_molecule_scenario(scenario, container_platform, env_with_venv):
    if scenario in NOT_YET_GREEN and scenario not in os.environ.get("MOLECULE_SCENARIOS", "").split():
        pytest.skip(NOT_YET_GREEN[scenario])
    LOGS.mkdir(exist_ok=True)
    log = LOGS / f"molecule-{scenario}.log"
    started = time.monotonic()
    with log.open("w") as out:
        res = subprocess.run(
            ["molecule", "test", "-s", scenario],
            cwd=ROOT,
            env=env_with_venv,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=40 * 60,
        )
    elapsed = time.monotonic() - started
    print(f"molecule test -s {scenario}: rc={res.returncode} in {elapsed:.0f} s (log: {log})")
    if res.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-150:])
        pytest.fail(f"molecule test -s {scenario} failed (rc={res.returncode}); last lines:\n{tail}")
