"""Shared fixtures: the container platform the molecule scenarios need."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, **kw)


def prepare_platform():
    """Docker engine up and test images built (cached by recipe hash)."""
    for script in ("scripts/ensure-docker.sh", "scripts/build-test-images.sh"):
        res = run([str(ROOT / script)])
        assert res.returncode == 0, f"{script} failed:\n{res.stdout}\n{res.stderr}"


@pytest.fixture(scope="session")
def container_platform():
    prepare_platform()
    yield
    release_leftover_swap()


def release_leftover_swap():
    """Swap files that test containers activated belong to the host kernel: if a
    scenario died before its cleanup step, turn them off here."""
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return
    for line in lines:
        name = line.split()[0]
        if "/var/lib/docker/" in name:
            subprocess.run(["swapoff", name.replace("\\040(deleted)", "")], check=False)


def venv_env():
    env = dict(os.environ)
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    return env


@pytest.fixture(scope="session")
def env_with_venv():
    return venv_env()


def pytest_collection_modifyitems(items):
    """Molecule tests last: they only wait for the background runs, so every other test
    runs while the scenarios do, instead of queueing behind the first scenario's wait."""
    items.sort(key=lambda item: bool(item.get_closest_marker("molecule")))


def pytest_collection_finish(session):
    """Start the selected molecule scenarios in the background now, so they run while
    the rest of the suite does (tests/molecule_runner.py)."""
    scenarios = [item.callspec.params["scenario"] for item in session.items
                 if item.get_closest_marker("molecule") and hasattr(item, "callspec")]
    if scenarios and not session.config.option.collectonly:
        from molecule_runner import Runner

        session.config.molecule_runner = Runner(scenarios, venv_env(), prepare_platform)


def pytest_sessionfinish(session):
    runner = getattr(session.config, "molecule_runner", None)
    if runner is not None:
        runner.shutdown()
        release_leftover_swap()
