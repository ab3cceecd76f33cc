"""Lint gate: yamllint (strict) and ansible-lint (production profile), zero findings."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd, env):
    return subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True, timeout=900)


def test_yamllint(env_with_venv):
    res = _run(["yamllint", "--strict", "."], env_with_venv)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ansible_lint_production_profile(env_with_venv):
    res = _run(["ansible-lint", "--profile", "production"], env_with_venv)
    assert res.returncode == 0, res.stdout[-8000:] + res.stderr[-8000:]
