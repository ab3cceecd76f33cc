"""roles/mlflow_server/files/mlflow-precompile.py, run with this venv's python (MLflow pinned, as on
the servers): it writes its marker only once the server's imports and the compile are done, skips
what is optional, and fails without MLflow's server. This venv was compiled by pip, so what the
compile achieves is checked where it is not: molecule/mlflow_server (every module a worker loads
has its bytecode, scikit-learn has none)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "roles" / "mlflow_server" / "files" / "mlflow-precompile.py"


def run(tmp_path, *python_flags):
    marker = tmp_path / ".precompiled-test"
    res = subprocess.run([sys.executable, *python_flags, str(SCRIPT), str(marker)],
                         capture_output=True, text=True, timeout=600, check=False)
    return res, marker


def test_marker_written_after_the_imports_and_the_compile(tmp_path):
    res, marker = run(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    first = marker.read_text().splitlines()[0]
    loaded = int(first.rsplit(":", 1)[1])
    assert loaded > 1000, first
    assert not (tmp_path / ".precompiled-test.tmp").exists()
    if importlib.util.find_spec("flask_wtf") is None:  # this venv has no auth extra
        assert "skipped mlflow.server.auth" in res.stdout, res.stdout


def test_without_mlflow_it_fails_and_writes_no_marker(tmp_path):
    res, marker = run(tmp_path, "-S")  # no site-packages: no MLflow
    assert res.returncode != 0
    assert "mlflow.server" in res.stderr, res.stderr
    assert not marker.exists()
