"""Fixtures of the front_door verifier: where the front door is and who may use it.

Everything here talks to the project's own container on the scenario's docker network.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
SECRETS = EPHEMERAL / "secrets"
CA_FILE = EPHEMERAL / "front-door-ca.crt"
CONTAINER = os.environ.get("MOLECULE_SCENARIO_NAME", "front_door") + "-a"
EXPERIMENT = "front-door"
MODEL = "front-door-model"


def secret(name):
    # ansible's password lookup stores "<password> salt=..." when it salts; first word only.
    return (SECRETS / name).read_text().split()[0]


@pytest.fixture(scope="session")
def ip():
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", CONTAINER],
        check=True, capture_output=True, text=True,
    ).stdout
    nets = json.loads(out)
    return next(n["IPAddress"] for n in nets.values() if n.get("IPAddress"))


@pytest.fixture(scope="session")
def base(ip):
    return f"https://{ip}"


@pytest.fixture(scope="session")
def ca():
    assert CA_FILE.is_file(), f"the converge did not fetch the CA to {CA_FILE}"
    return str(CA_FILE)


class Secrets(dict):
    """Passwords by user; never printed in a failure report."""

    def __repr__(self):
        return "<passwords of " + ", ".join(self) + ">"


@pytest.fixture(scope="session")
def creds():
    return Secrets((name, secret(name)) for name in ("admin", "alice", "bob", "carol", "ops"))


@pytest.fixture()
def tracking(monkeypatch, base, ca):
    """An MlflowClient factory for one user, over HTTPS verified with the CA file."""
    from mlflow.tracking import MlflowClient

    def make(user, password):
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", ca)
        # The client's own request timeout (120 s), as users run it: a slow answer fails here
        # too. No retries, so that a failed call fails the test instead of being sent again.
        monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        return MlflowClient(tracking_uri=base)

    return make
