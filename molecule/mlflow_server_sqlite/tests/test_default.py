"""Verify mlflow_server with SQLite and local artifacts (single host)."""

import os
import shlex

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("test_hosts")

ADMIN_PASSWORD = "Adm1n-pa55word-for-tests"

# Runs inside the container with the server's own venv: log a run with an artifact
# through the proxy, as the admin user.
CLIENT = """
import os, mlflow
os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"
os.environ["MLFLOW_TRACKING_PASSWORD"] = os.environ["TEST_ADMIN_PASSWORD"]
mlflow.set_tracking_uri("http://127.0.0.1:5000")
exp = mlflow.set_experiment("sqlite-smoke")
with mlflow.start_run() as run:
    mlflow.log_param("p", "1")
    mlflow.log_metric("m", 2.0)
    mlflow.log_text("local artifact", "out/a.txt")
print(exp.experiment_id, run.info.run_id)
"""


def test_service_active_enabled_and_local_only(host):
    svc = host.service("mlflow")
    assert svc.is_running and svc.is_enabled
    sockets = host.check_output("ss -Hltn '( sport = :5000 )'")
    assert [line.split()[3] for line in sockets.splitlines()] == ["127.0.0.1:5000"]


def test_sqlite_files_belong_to_mlflow(host):
    for path in ("/var/lib/mlflow/mlflow.db", "/var/lib/mlflow/basic_auth.db"):
        f = host.file(path)
        assert f.exists and f.user == "mlflow", path


def test_workers_sized_automatically(host):
    unit = host.file("/etc/systemd/system/mlflow.service").content_string
    cpus = int(host.check_output("nproc"))
    mem_mb = int(host.check_output("awk '/MemTotal/ {print $2}' /proc/meminfo")) // 1024
    expected = min(max(2 * cpus, 1), max((mem_mb - 512) // 320, 1))
    assert f"--workers {expected} " in unit


def test_client_logs_to_sqlite_and_local_artifacts(host):
    venv = "/opt/mlflow/current/bin/python"
    cmd = f"TEST_ADMIN_PASSWORD={ADMIN_PASSWORD} {venv} -c {shlex.quote(CLIENT)}"
    exp_id, run_id = host.check_output(cmd).split()[-2:]
    f = host.file(f"/srv/mlflow-artifacts/{exp_id}/{run_id}/artifacts/out/a.txt")
    assert f.exists and f.user == "mlflow"
    assert f.content_string == "local artifact"
