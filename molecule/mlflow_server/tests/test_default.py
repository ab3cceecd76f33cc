"""Verify mlflow_server on the two converged servers (testinfra + an MLflow client)."""

import json
import os
import shlex
import re
import uuid

import pytest
import testinfra.utils.ansible_runner

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = RUNNER.get_hosts("test_hosts")

DB_PASSWORD = 'Pg-s3cret%w1th"quote\'and#hash'
ADMIN_PASSWORD = "Adm1n-pa55word-for-tests"
ENV_FILE = "/etc/mlflow/mlflow.env"
MAX_EXPOSURE = 1.5


def name(host):
    return host.backend.get_hostname()


def ip_of(host):
    return host.check_output("hostname -I").split()[0]


def bind_of(host):
    return "0.0.0.0" if name(host).endswith("-a") else "127.0.0.1"


def test_service_active_and_enabled(host):
    svc = host.service("mlflow")
    assert svc.is_running and svc.is_enabled


def test_listens_only_where_configured(host):
    out = host.check_output("ss -Hltnp")
    mlflow_sockets = {line.split()[3] for line in out.splitlines() if "mlflow" in line or "uvicorn" in line or "python" in line}
    assert mlflow_sockets == {f"{bind_of(host)}:5000"}, out


def test_runs_as_the_mlflow_user(host):
    pid = host.check_output("systemctl show -p MainPID --value mlflow")
    users = set(host.check_output(f"ps -o user= --ppid {pid} -p {pid}").split())
    assert users == {"mlflow"}


def test_env_file_is_root_only(host):
    f = host.file(ENV_FILE)
    assert f.user == "root" and f.group == "root" and f.mode == 0o600


def test_db_password_not_in_ps_nor_journal(host):
    ps = host.check_output("ps -ef")
    journal = host.check_output("journalctl -u mlflow -u mlflow-gc --no-pager -o cat")
    assert DB_PASSWORD not in ps and "PGPASSWORD" not in ps
    assert DB_PASSWORD not in journal and ADMIN_PASSWORD not in journal


def test_systemd_analyze_security(host):
    out = host.check_output("systemd-analyze security --no-pager mlflow.service")
    last = out.strip().splitlines()[-1]
    print(f"{name(host)}: {last}")
    exposure = float(re.search(r"exposure level for mlflow.service:\s+([0-9.]+)", last).group(1))
    assert exposure <= MAX_EXPOSURE, out


def test_health_is_unauthenticated_but_the_api_is_not(host):
    script = (
        "import urllib.request,urllib.error\n"
        "print(urllib.request.urlopen('http://127.0.0.1:5000/health').status)\n"
        "try:\n"
        "    urllib.request.urlopen('http://127.0.0.1:5000/api/2.0/mlflow/experiments/search?max_results=1')\n"
        "    print('open')\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    out = host.check_output(f"python3 -c {shlex.quote(script)}").split()
    assert out == ["200", "401"]


def test_gc_timer_on_first_host_only(host):
    timer = host.service("mlflow-gc.timer")
    first = name(host).endswith("-a")
    assert timer.is_enabled == first
    if first:
        res = host.run("systemctl start mlflow-gc.service")
        assert res.rc == 0, host.run("journalctl -u mlflow-gc -n 30 --no-pager").stdout


def migrations(host):
    f = host.file("/var/backups/mlflow/migrations.jsonl")
    if not f.exists:
        return []
    return [json.loads(line) for line in f.content_string.splitlines() if line.strip()]


def test_schema_work_ran_once_for_the_group(host):
    """prepare installed 3.16.1 (schema created), converge upgraded to 3.17.2: both on the
    first host only, with a backup before the upgrade; the second host never migrated."""
    done = migrations(host)
    upgraded = host.file("/opt/mlflow/venvs/3.16.1/bin/mlflow").exists  # prepare's previous release
    if not name(host).endswith("-a"):
        assert done == []
        return
    if not upgraded:
        assert [m["mlflow_version"] for m in done] == ["3.17.2"] and done[0]["before"]["tracking"]["empty"]
        return
    assert [m["mlflow_version"] for m in done] == ["3.16.1", "3.17.2"], done
    init, upgrade = done
    assert init["before"]["tracking"]["empty"] and init["backups"] == []
    assert upgrade["upgraded"] == ["tracking"]
    assert upgrade["before"]["tracking"]["current"] == init["after"]["tracking"]["head"]
    assert upgrade["after"]["tracking"]["current"] == upgrade["after"]["tracking"]["head"]
    local = [b for b in upgrade["backups"] if b.startswith("/")]
    remote = [b for b in upgrade["backups"] if b.startswith("s3://")]
    assert len(local) == 2 and len(remote) == 2, upgrade["backups"]
    for path in local:
        f = host.file(path)
        assert f.exists and f.user == "root" and f.mode == 0o600 and f.size > 0
    print(f"upgrade: {upgrade['before']['tracking']['current']} -> {upgrade['after']['tracking']['current']}, backups {upgrade['backups']}")


def test_previous_venv_kept_and_current_points_to_new(host):
    assert host.file("/opt/mlflow/current").linked_to == "/opt/mlflow/venvs/3.17.2"
    assert "/opt/mlflow/venvs/3.17.2/bin/mlflow server" in host.file("/etc/systemd/system/mlflow.service").content_string


def test_mlflow_client_end_to_end(host):
    if not name(host).endswith("-a"):
        pytest.skip("the client runs against the server that binds 0.0.0.0")
    import boto3
    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN_PASSWORD
    uri = f"http://{ip_of(host)}:5000"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp_name = f"molecule-{uuid.uuid4().hex[:8]}"
    exp_id = mlflow.create_experiment(exp_name)
    model_name = f"molecule-model-{uuid.uuid4().hex[:8]}"

    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_metric("loss", 0.25, step=1)
        client.log_batch(
            run.info.run_id,
            metrics=[mlflow.entities.Metric("acc", 0.9, 0, 2)],
            params=[mlflow.entities.Param("solver", "lbfgs")],
            tags=[mlflow.entities.RunTag("team", "mlops")],
        )
        mlflow.log_text("hello artifact", "notes/hello.txt")
        model = LogisticRegression().fit(X, y)
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=model_name)

    got = client.get_run(run.info.run_id).data
    assert got.params == {"alpha": "0.5", "solver": "lbfgs"}
    assert got.metrics == {"loss": 0.25, "acc": 0.9}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notes")] == ["notes/hello.txt"]

    version = client.get_latest_versions(model_name)[0].version
    client.set_registered_model_alias(model_name, "champion", version)
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    assert list(loaded.predict(X)) == list(model.predict(X))
    assert client.get_model_version_by_alias(model_name, "champion").version == version
    print(f"client: run {run.info.run_id}, model {model_name} v{version} @champion, logged model {info.model_id}")

    # The artifacts went through the server's proxy into the S3 bucket on the emulator.
    moto = RUNNER.get_host([h for h in RUNNER.get_hosts("services") if h.endswith("-moto")][0])
    moto_ip = moto.check_output("hostname -I").split()[0]
    s3 = boto3.client("s3", endpoint_url=f"http://{moto_ip}:5000", region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-artifacts", Prefix=f"mlruns/{exp_id}/").get("Contents", [])]
    print(f"S3 objects under mlruns/{exp_id}/: {len(keys)}")
    backups = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-backups", Prefix="db/").get("Contents", [])]
    upgraded = host.file("/opt/mlflow/venvs/3.16.1/bin/mlflow").exists
    assert len(backups) == (2 if upgraded else 0) and all(k.endswith(".dump") for k in backups), backups
    assert any(k.endswith("notes/hello.txt") for k in keys), keys
    assert any(k.endswith("MLmodel") for k in keys), keys

    # The other server shares the backend: it sees the registered model.
    other = RUNNER.get_host([h for h in testinfra_hosts if h.endswith("-b")][0])
    script = (
        "import base64,json,urllib.request\n"
        f"r=urllib.request.Request('http://127.0.0.1:5000/api/2.0/mlflow/registered-models/get?name={model_name}')\n"
        f"r.add_header('Authorization','Basic '+base64.b64encode(b'admin:{ADMIN_PASSWORD}').decode())\n"
        "print(json.load(urllib.request.urlopen(r))['registered_model']['aliases'][0]['alias'])\n"
    )
    assert other.check_output(f"python3 -c {shlex.quote(script)}") == "champion"
