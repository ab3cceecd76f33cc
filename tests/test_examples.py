"""The examples run end to end against a throwaway MLflow server on loopback
(sqlite + local artifacts, the seeds' scenario 2) and leave what they claim."""

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["iris_registry.py", "wine_elasticnet_sweep.py", "house_prices.py"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, env_with_venv):
    d = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = dict(env_with_venv)
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{d}/mlflow.db", "--artifacts-destination", str(d / "artifacts")],
        env=env, stdout=open(d / "server.log", "w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("local mlflow server did not start:\n" + (d / "server.log").read_text()[-3000:])
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs(script, server, env_with_venv):
    env = dict(env_with_venv, MLFLOW_TRACKING_URI=server)
    res = subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "examples" / script)],
                         env=env, text=True, capture_output=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = [line for line in res.stdout.splitlines() if line.startswith(("run ", "sweep "))]
    assert summary, res.stdout


def test_registry_alias_points_at_latest(server, env_with_venv):
    os.environ["MLFLOW_TRACKING_URI"] = server
    try:
        from mlflow import MlflowClient

        mv = MlflowClient().get_model_version_by_alias("iris-classifier", "champion")
        assert int(mv.version) >= 1
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
