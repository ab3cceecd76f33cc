"""Verify mlflow_server on the two converged servers (testinfra + an MLflow client)."""

import json
import os
import shlex
import re
import sys
import uuid
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = RUNNER.get_hosts("test_hosts")

# The releases: converge installs the role's pin, prepare the previous one (molecule.yml).
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from pins import MLFLOW_VERSION as VERSION  # noqa: E402
PREVIOUS = RUNNER.get_variables(testinfra_hosts[0])["mlflow_test_previous_version"]

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


def api(host, method, path, body=None):
    """Call the MLflow REST API on 127.0.0.1:5000 from inside the host as the admin; JSON back.
    A dict body is sent as JSON, a str as it is (artifact uploads)."""
    script = (
        "import base64,json,sys,urllib.request\n"
        "body=sys.argv[3].encode() if len(sys.argv) > 3 else None\n"
        "r=urllib.request.Request('http://127.0.0.1:5000'+sys.argv[2],data=body,method=sys.argv[1])\n"
        "r.add_header('Content-Type','application/json')\n"
        f"r.add_header('Authorization','Basic '+base64.b64encode(b'admin:{ADMIN_PASSWORD}').decode())\n"
        "print(urllib.request.urlopen(r).read().decode() or '{}')\n"
    )
    if body is not None and not isinstance(body, str):
        body = json.dumps(body)
    args = [method, path] + ([body] if body is not None else [])
    return json.loads(host.check_output(f"python3 -c {shlex.quote(script)} " + " ".join(shlex.quote(a) for a in args)))


def test_service_active_and_enabled(host):
    svc = host.service("mlflow")
    assert svc.is_running and svc.is_enabled


def test_listens_only_where_configured(host):
    """The only TCP listener on the host is MLflow on its configured address, owned by the
    mlflow user (docker's embedded DNS resolver on 127.0.0.11 aside); nothing on IPv6."""
    out = host.check_output("ss -Hltne")
    listeners = {}
    for line in out.splitlines():
        local = line.split()[3]
        if not local.startswith("127.0.0.11:"):
            listeners[local] = re.search(r"\buid:(\d+)", line)
    assert set(listeners) == {f"{bind_of(host)}:5000"}, out
    uid = listeners[f"{bind_of(host)}:5000"]
    # ss prints uid: only for a non-root owner: a root-owned socket fails here too.
    assert uid and int(uid.group(1)) == host.user("mlflow").uid, out
    assert "/system.slice/mlflow.service" in uid.string, "the socket is not in mlflow.service's cgroup"


def test_runs_as_the_mlflow_user(host):
    pid = host.check_output("systemctl show -p MainPID --value mlflow")
    users = set(host.check_output(f"ps -o user= --ppid {pid} -p {pid}").split())
    assert users == {"mlflow"}


@pytest.mark.parametrize("path", [ENV_FILE, "/etc/mlflow/mlflow-gc.env"])
def test_env_files_are_root_only(host, path):
    f = host.file(path)
    assert f.user == "root" and f.group == "root" and f.mode == 0o600
    assert ADMIN_PASSWORD in f.content_string  # the secrets are here, and only here


def test_db_password_not_in_ps_nor_journal(host):
    ps = host.check_output("ps -ef")
    journal = host.check_output("journalctl -u mlflow -u mlflow-gc --no-pager -o cat")
    assert DB_PASSWORD not in ps and "PGPASSWORD" not in ps
    assert DB_PASSWORD not in journal and ADMIN_PASSWORD not in journal


def workers_of(host):
    return int(re.search(r"--workers (\d+)", host.file("/etc/systemd/system/mlflow.service").content_string).group(1))


def test_workers_sized(host):
    """-a sets 2 workers; -b leaves 'auto': 2 per CPU, capped so each gets 320 MiB above 512."""
    if name(host).endswith("-a"):
        assert workers_of(host) == 2
        return
    cpus = int(host.check_output("nproc"))
    mem_mb = int(host.check_output("awk '/MemTotal/ {print $2}' /proc/meminfo")) // 1024
    assert workers_of(host) == min(max(2 * cpus, 1), max((mem_mb - 512) // 320, 1))


def test_db_connections_fit_the_budget(host):
    """Every server's workers x engines (tracking, registry, auth) x (pool + overflow) add up to at most
    mlflow_server_db_connection_budget (50) across the group, the pools are not empty, the overflow is
    not 0 (which MLflow would read as unset: SQLAlchemy's 10), and each worker lets half its pool's worth of requests into the store's sessions."""
    if not name(host).endswith("-a"):
        pytest.skip("once for the group")
    total = 0
    for h in (RUNNER.get_host(n) for n in testinfra_hosts):
        env = dict(line.split("=", 1) for line in h.check_output(f"grep -E '^MLFLOW_(SQLALCHEMYSTORE|AWS)_' {ENV_FILE}").splitlines())
        pool, overflow = int(env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"].strip('"')), int(env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"].strip('"'))
        assert pool >= 1 and overflow >= 1
        assert int(env["MLFLOW_AWS_SESSION_SLOTS"].strip('"')) == max((pool + overflow) // 2, 1)
        total += workers_of(h) * 3 * (pool + overflow)
        print(f"{name(h)}: {workers_of(h)} workers x 3 engines x ({pool} + {overflow})")
    assert 0 < total <= 50, total


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
    assert timer.is_enabled == name(host).endswith("-a")
    if name(host).endswith("-a"):
        assert timer.is_running, "the timer is enabled but not started"


def test_gc_purges_deleted_runs(host):
    """A deleted run (older than mlflow_server_gc_older_than, 1s in this scenario) is gone from
    the database after the gc service ran; a live run is kept."""
    if not name(host).endswith("-a"):
        pytest.skip("gc runs on the first host of the group")
    exp = api(host, "POST", "/api/2.0/mlflow/experiments/create", {"name": f"gc-{uuid.uuid4().hex[:8]}"})["experiment_id"]
    doomed, kept = (api(host, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": exp})["run"]["info"]["run_id"]
                    for _ in range(2))
    dirs = {}
    for run_id in (doomed, kept):
        uri = api(host, "GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]["info"]["artifact_uri"]
        dirs[run_id] = uri[len("mlflow-artifacts:/"):].lstrip("/")
        api(host, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{dirs[run_id]}/gc.txt", "bytes in S3")

    def listed(run_id):
        return api(host, "GET", f"/api/2.0/mlflow-artifacts/artifacts?path={dirs[run_id]}").get("files", [])

    assert listed(doomed) and listed(kept)
    api(host, "POST", "/api/2.0/mlflow/runs/delete", {"run_id": doomed})
    host.run("sleep 2")
    res = host.run("systemctl start mlflow-gc.service")
    assert res.rc == 0, host.run("journalctl -u mlflow-gc -n 30 --no-pager -o cat").stdout
    search = api(host, "POST", "/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [exp], "run_view_type": "ALL"}).get("runs", [])
    assert [r["info"]["run_id"] for r in search] == [kept], search
    assert listed(doomed) == [], "the purged run's artifacts are still in S3"
    assert [f["path"] for f in listed(kept)] == ["gc.txt"]
    print(f"gc: run {doomed} and its artifacts purged, {kept} kept")


def migrations(host):
    f = host.file("/var/backups/mlflow/migrations.jsonl")
    if not f.exists:
        return []
    # The completed migrations (the "phase" lines are their progress, as it happened).
    entries = [json.loads(line) for line in f.content_string.splitlines() if line.strip()]
    return [entry for entry in entries if "phase" not in entry]


def test_schema_work_ran_once_for_the_group(host):
    """prepare installed PREVIOUS (schema created), converge upgraded to VERSION: both on the
    first host only, with a backup before the upgrade; the second host never migrated."""
    done = migrations(host)
    upgraded = host.file(f"/opt/mlflow/venvs/{PREVIOUS}/bin/mlflow").exists  # prepare's previous release
    if not name(host).endswith("-a"):
        assert done == []
        return
    if not upgraded:
        assert [m["mlflow_version"] for m in done] == [VERSION] and done[0]["before"]["tracking"]["empty"]
        return
    assert [m["mlflow_version"] for m in done] == [PREVIOUS, VERSION], done
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
    assert host.file("/opt/mlflow/current").linked_to == f"/opt/mlflow/venvs/{VERSION}"
    assert f"/opt/mlflow/venvs/{VERSION}/bin/mlflow server" in host.file("/etc/systemd/system/mlflow.service").content_string


EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
DATA = Path(__file__).resolve().parents[2] / "shared" / "files" / "mlflow_data.py"
# What the unit's workers import (the unit's --app-name basic-auth), plus what they load while they
# serve: the UI's GraphQL schema, traces, uvicorn's HTTP protocol. As the service user, who cannot
# write bytecode into the venv: a module without it would be compiled in memory at every start.
LOADED_BY_A_WORKER = """
import importlib, importlib.util, os, sys, warnings
warnings.simplefilter("ignore")
for name in ["mlflow.server.auth", "mlflow.server.fastapi_app", "mlflow.server.graphql.graphql_schema_extensions",
             "mlflow.tracing", "uvicorn.protocols.http.h11_impl", "uvicorn.lifespan.on", "mlflow.store.db.utils"]:
    importlib.import_module(name)
venv = sys.prefix + os.sep
mods = [m.__file__ for m in list(sys.modules.values())
        if (getattr(m, "__file__", None) or "").startswith(venv) and m.__file__.endswith(".py")]
missing = [f for f in mods if not os.path.exists(importlib.util.cache_from_source(f))]
print(len(mods), len(missing), *missing[:20])
"""


def test_workers_load_bytecode_compiled_at_install_and_pip_compiled_not_everything(host):
    """pip installs with --no-compile and the role compiles what a server loads (its imports, then
    whole the packages it loads lazily): every module a worker loads has its bytecode, and a package
    the server never loads (scikit-learn) has none, so pip did not spend its ~35 s of CPU on all of it."""
    venv = f"/opt/mlflow/venvs/{VERSION}"
    out = host.check_output(f"runuser -u mlflow -- {venv}/bin/python -c {shlex.quote(LOADED_BY_A_WORKER)}").split()
    loaded, missing = int(out[0]), int(out[1])
    print(f"{name(host)}: a worker's {loaded} modules from the venv, {missing} without bytecode {out[2:]}")
    assert loaded > 1000 and missing == 0, out
    assert host.check_output(f"ls -a {venv} | grep -c '^.precompiled-' || true") == "1"
    find_sklearn = "import importlib.util as u; print(u.find_spec('sklearn').submodule_search_locations[0])"
    sklearn = host.check_output(f"{venv}/bin/python -c {shlex.quote(find_sklearn)}")
    compiled = host.check_output(f"find {sklearn} -name '*.pyc' | wc -l")
    assert compiled == "0", f"pip compiled scikit-learn: {compiled} .pyc files"


DBCTL = f"/opt/mlflow/venvs/{VERSION}/bin/python /opt/mlflow/bin/mlflow-dbctl.py --env-file {ENV_FILE}"


def data_tool(*args):
    """molecule/shared/files/mlflow_data.py on the test machine, as the admin's client."""
    import subprocess

    env = dict(os.environ, NO_PROXY="*", MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD,
               MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD="false")  # moto.test, in the presigned URLs, does not resolve here
    proc = subprocess.run([sys.executable, str(DATA), *args], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return proc


def test_upgrade_kept_every_record_and_its_downtime(host):
    """Starting point (b): prepare loaded the previous release with 200 runs, models, artifacts,
    logged models, users and permissions, and exported it all; after the upgrade the full export
    is identical. The probe prepare started measured how long the first server did not answer."""
    if not name(host).endswith("-a"):
        pytest.skip("the data is served by the first server")
    pid = (EPHEMERAL / "probe.pid").read_text().strip()
    os.system(f"kill {pid} 2>/dev/null")
    changes = [json.loads(line) for line in (EPHEMERAL / "probe.jsonl").read_text().splitlines()]
    outages = [(b["t"] - a["t"], a["detail"]) for a, b in zip(changes, changes[1:]) if not a["up"] and b["up"]]
    assert changes[0]["up"] and changes[-1]["up"] and outages, changes
    after = EPHEMERAL / "export-after.json"
    res = data_tool("export", "--uri", f"http://{ip_of(host)}:5000", "--users", "alice,bob", "--scope", "loaded", "--out", str(after))
    assert res.returncode == 0, res.stderr[-2000:]
    counts = json.loads(res.stdout.strip().splitlines()[-1])
    assert counts["runs"] >= 200 and counts["registered_models"] >= 3 and counts["logged_models"] >= 3, counts
    assert counts["users"] == 2 and counts["metric_points"] >= 200 * 100, counts
    compared = data_tool("compare", str(EPHEMERAL / "export-before.json"), str(after))
    assert compared.stdout.strip() == "identical", compared.stdout
    print(f"upgrade {PREVIOUS} -> {VERSION} with data: export identical ({counts}); first server unanswered "
          f"{len(outages)} time(s), longest {max(o[0] for o in outages):.1f} s, total {sum(o[0] for o in outages):.1f} s")


def test_rollback_drill_serves_the_pre_upgrade_backup_with_the_previous_release(host):
    """The documented rollback: the backup set the upgrade took restored (both databases, as a
    pair) into new databases; the previous release, kept by retention, serves it; the export is
    the one from before the upgrade."""
    if not name(host).endswith("-a"):
        pytest.skip("the migration and its backups are on the first server")
    upgrade = [m for m in migrations(host) if m["mlflow_version"] == VERSION][0]
    stamp = upgrade["backup_set"]
    manifest = json.loads(host.file(f"/var/backups/mlflow/backup-{stamp}.json").content_string)
    assert set(manifest["databases"]) == {"tracking", "auth"} and manifest["mlflow_version"] == VERSION, manifest
    creator = json.dumps({"username": "mlflow", "password": DB_PASSWORD})
    res = host.run(f"printf %s {shlex.quote(creator)} | {DBCTL} restore --backup-dir /var/backups/mlflow --set {stamp} "
                   "--tracking-db mlflow_rollback --auth-db mlflow_auth_rollback --create "
                   "--pg-dump /usr/lib/postgresql/15/bin/pg_dump")
    assert res.rc == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["databases"] == {"tracking": "mlflow_rollback", "auth": "mlflow_auth_rollback"}, out
    host.check_output("sed 's#:5432/mlflow_auth?#:5432/mlflow_auth_rollback?#' /etc/mlflow/basic_auth.ini > /root/rollback.ini"
                      f" && sed -e 's#:5432/mlflow?#:5432/mlflow_rollback?#' -e 's#^MLFLOW_AUTH_CONFIG_PATH=.*#MLFLOW_AUTH_CONFIG_PATH=/root/rollback.ini#'"
                      f" {ENV_FILE} > /root/rollback.env && chmod 600 /root/rollback.ini /root/rollback.env")
    assert "mlflow_rollback?" in host.file("/root/rollback.env").content_string
    host.check_output(f"systemd-run --unit mlflow-rollback -p EnvironmentFile=/root/rollback.env /opt/mlflow/venvs/{PREVIOUS}/bin/mlflow "
                      f"server --host 0.0.0.0 --port 5001 --workers 1 --serve-artifacts --app-name basic-auth "
                      f"--allowed-hosts {ip_of(host)}:5001,127.0.0.1:5001")
    try:
        check = "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:5001/health')\""
        for _ in range(90):
            if host.run(check).rc == 0:
                break
            import time

            time.sleep(2)
        rolled = EPHEMERAL / "export-rollback.json"
        res = data_tool("export", "--uri", f"http://{ip_of(host)}:5001", "--users", "alice,bob", "--scope", "loaded", "--out", str(rolled))
        assert res.returncode == 0, res.stderr[-2000:]
        compared = data_tool("compare", str(EPHEMERAL / "export-before.json"), str(rolled))
        assert compared.stdout.strip() == "identical", compared.stdout
    finally:
        host.run("systemctl stop mlflow-rollback")
    print(f"rollback drill: set {stamp} ({', '.join(out['actions'])}); MLflow {PREVIOUS} serves it, export identical")


def test_presigned_download_from_s3(host):
    """The server hands out presigned S3 URLs (MLflow 3.17 clients use them for every download
    from an S3 destination): from a host that can reach S3, the URL returns the artifact."""
    if not name(host).endswith("-a"):
        pytest.skip("once for the shared bucket")
    exp = api(host, "POST", "/api/2.0/mlflow/experiments/create", {"name": f"presign-{uuid.uuid4().hex[:8]}"})["experiment_id"]
    info = api(host, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": exp})["run"]["info"]
    assert info["artifact_uri"].startswith("mlflow-artifacts:/"), info
    path = info["artifact_uri"][len("mlflow-artifacts:/"):].lstrip("/") + "/presigned.txt"
    payload = f"presigned {uuid.uuid4().hex}"
    script = (
        "import base64,json,sys,urllib.request\n"
        "path,payload=sys.argv[1],sys.argv[2]\n"
        f"auth='Basic '+base64.b64encode(b'admin:{ADMIN_PASSWORD}').decode()\n"
        "base='http://127.0.0.1:5000/api/2.0/mlflow-artifacts/'\n"
        "r=urllib.request.Request(base+'artifacts/'+path,data=payload.encode(),method='PUT')\n"
        "r.add_header('Authorization',auth)\n"
        "urllib.request.urlopen(r).read()\n"
        "r=urllib.request.Request(base+'presigned/'+path)\n"
        "r.add_header('Authorization',auth)\n"
        "p=json.load(urllib.request.urlopen(r))\n"
        "r=urllib.request.Request(p['url'],headers=p.get('headers') or {})\n"
        "print(json.dumps({'url':p['url'].split('?')[0],'body':urllib.request.urlopen(r).read().decode()}))\n"
    )
    out = json.loads(host.check_output(f"python3 -c {shlex.quote(script)} {shlex.quote(path)} {shlex.quote(payload)}"))
    assert out["url"] == f"http://moto.test:5000/mlflow-artifacts/mlruns/{path}", out
    assert out["body"] == payload


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
    # MLflow 3.17 clients download every artifact through a presigned S3 URL when the server
    # advertises it (S3 destinations do); this runner cannot resolve the emulator's name, like a
    # client without a route to S3, so it asks for proxied downloads (the README's advice).
    # test_presigned_download_from_s3 covers the presigned path from a host that can reach S3.
    os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"] = "false"
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "2"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
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

    version = client.search_model_versions(f"name = '{model_name}'")[0].version
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
    upgraded = host.file(f"/opt/mlflow/venvs/{PREVIOUS}/bin/mlflow").exists
    uploaded = [b[len("s3://mlflow-backups/"):] for m in migrations(host) for b in m["backups"] if b.startswith("s3://")]
    assert len(uploaded) == (2 if upgraded else 0) and set(uploaded) <= set(backups), (uploaded, backups)
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


# ---- a failed migration (last: it re-runs the role) ---------------------------------

SCHEMA_PY = """\
import importlib.util, json, os, sys
import sqlalchemy
from alembic.script import ScriptDirectory
from mlflow.store.db.utils import _get_alembic_config
spec = importlib.util.spec_from_file_location("dbctl", "/opt/mlflow/bin/mlflow-dbctl.py")
dbctl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dbctl)
dbctl.load_env_file("/etc/mlflow/mlflow.env")
uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
script = ScriptDirectory.from_config(_get_alembic_config(uri))
head = script.get_current_head()
engine = sqlalchemy.create_engine(uri)
with engine.begin() as conn:
    if len(sys.argv) > 1:
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = :v"), {"v": sys.argv[1]})
    current = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
print(json.dumps({"current": current, "head": head, "previous": script.get_revision(head).down_revision}))
"""


def schema(host, set_to=None):
    """The tracking schema's revision (and the code's head and its parent), read, or set first."""
    arg = f" {shlex.quote(set_to)}" if set_to else ""
    return json.loads(host.check_output(f"/opt/mlflow/current/bin/python -c {shlex.quote(SCHEMA_PY)}{arg}"))


def converge(extra_vars=None, tags=None):
    """Re-run the scenario's converge playbook on the group, as molecule does (only the phases of
    `tags`, if given, as a user changes one thing); the completed process."""
    import shutil
    import subprocess
    import sys

    playbook = shutil.which("ansible-playbook") or os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    cmd = [playbook, "-i", os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]),
           os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "converge.yml")]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if tags:
        cmd += ["--tags", tags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=dict(os.environ), check=False)


def test_failed_migration_stops_the_group_and_keeps_it_serving(host):
    """The schema is put back one revision, so the role must migrate and the last migration
    collides with the tables it already made: the play stops on every host, after a backup, with
    the cause and what to do; PostgreSQL rolls the migration back and no server restarts."""
    if not name(host).endswith("-a"):
        pytest.skip("the group's migration runs on its first host")
    hosts = [RUNNER.get_host(h) for h in testinfra_hosts]
    state = schema(host)
    assert state["current"] == state["head"] and state["previous"], state
    pids = [h.check_output("systemctl show -P MainPID mlflow.service") for h in hosts]
    dumps = host.check_output("find /var/backups/mlflow -name '*.dump' | wc -l")
    schema(host, state["previous"])
    try:
        run = converge()
        after = schema(host)
    finally:
        schema(host, state["head"])
    out = run.stdout + run.stderr
    print("\n".join(line for line in out.splitlines() if "failed" in line.lower())[-2000:])
    assert run.returncode != 0, out[-3000:]
    assert f"The schema migration to MLflow {VERSION} failed on {name(host)}" in out, out[-3000:]
    assert "already exists" in out and "Nothing was restarted" in out and "re-run the playbook" in out
    assert DB_PASSWORD not in out and ADMIN_PASSWORD not in out
    # Every host of the group was in the play and stopped at the migration: none went on.
    assert all(re.search(rf"^{re.escape(name(h))}\s*:\s*ok=", out, re.M) for h in hosts), out[-1500:]
    assert "Point the current symlink" not in out, "a host went on past the failed migration"
    assert after["current"] == state["previous"], "the failed migration was not rolled back"
    # The backups it took first are named in the message, and are there.
    named = re.search(r"Backups taken just before \(set \d{8}T\d{6}Z\): (.*?)\.\s", out).group(1).split(", ")
    local = [b for b in named if b.startswith("/var/backups/mlflow/")]
    assert local and any(b.startswith("s3://mlflow-backups/") for b in named), named
    assert all(host.file(b).exists and host.file(b).mode == 0o600 for b in local), named
    assert int(host.check_output("find /var/backups/mlflow -name '*.dump' | wc -l")) == int(dumps) + len(local)
    assert [h.check_output("systemctl show -P MainPID mlflow.service") for h in hosts] == pids
    assert schema(host)["current"] == state["head"]
    test_health_is_unauthenticated_but_the_api_is_not(host)


# ---- the PostgreSQL client follows the database server's major version --------------

SERVER_VERSION_PY = """\
import importlib.util, os
import sqlalchemy
spec = importlib.util.spec_from_file_location("dbctl", "/opt/mlflow/bin/mlflow-dbctl.py")
dbctl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dbctl)
dbctl.load_env_file("/etc/mlflow/mlflow.env")
engine = sqlalchemy.create_engine(os.environ["MLFLOW_BACKEND_STORE_URI"])
with engine.connect() as conn:
    print(conn.execute(sqlalchemy.text("SHOW server_version_num")).scalar())
"""
SERVER_MAJOR = "15"  # mlflow_server_db_server_version in molecule.yml
DBCTL = "/opt/mlflow/current/bin/python /opt/mlflow/bin/mlflow-dbctl.py --env-file /etc/mlflow/mlflow.env"


def server_major(host):
    return int(host.check_output(f"/opt/mlflow/current/bin/python -c {shlex.quote(SERVER_VERSION_PY)}")) // 10000


def test_pg_client_follows_the_server_version(host):
    """mlflow_server_db_server_version is the stand-in server's real major (15): Debian 12 gets
    postgresql-client-15, Debian 13 (which offers 17 only) the next newer, postgresql-client-17,
    instead of the distribution's default postgresql-client; the upgrade backed up with that pg_dump."""
    assert server_major(host) == int(SERVER_MAJOR), "molecule.yml's mlflow_server_db_server_version is not the server's"
    major = 15 if name(host).endswith("-a") else 17
    assert host.package(f"postgresql-client-{major}").is_installed
    assert not host.package("postgresql-client").is_installed, "the default client was installed as well"
    pg_dump = f"/usr/lib/postgresql/{major}/bin/pg_dump"
    assert f"(PostgreSQL) {major}." in host.check_output(f"{pg_dump} --version")
    if not name(host).endswith("-a"):
        return
    backed_up = [m for m in migrations(host) if m["backups"]]
    if host.file(f"/opt/mlflow/venvs/{PREVIOUS}/bin/mlflow").exists:  # prepare's upgrade path ran
        used = backed_up[-1]["pg_dump"]
        assert used["path"] == pg_dump and used["major"] == 15 and used["server_major"] == 15, used
        print(f"upgrade backup: {used['version']} against server {used['server_version']}")


def test_dbctl_refuses_a_pg_dump_older_than_the_server(host):
    """mlflow-dbctl.py compares pg_dump's major with the server's (SHOW server_version_num) before
    the first backup: an older one is refused, naming both, before anything is backed up or migrated."""
    if not name(host).endswith("-a"):
        pytest.skip("once, against the shared database")
    fake = "/root/pg_dump-14"
    host.check_output(f"printf '#!/bin/sh\\necho \"pg_dump (PostgreSQL) 14.13\"\\n' > {fake} && chmod 0755 {fake}")
    state = schema(host)
    schema(host, state["previous"])
    try:
        res = host.run(f"{DBCTL} migrate --backup-dir /root/dbctl-test --pg-dump {fake}")
        after = schema(host)
    finally:
        schema(host, state["head"])
        host.run(f"rm -rf {fake} /root/dbctl-test")
    out = json.loads(res.stdout)
    print(out["error"])
    assert res.rc == 1 and out["failed"] and out["backups"] == [], res.stdout
    assert "pg_dump 14" in out["error"] and "PostgreSQL 15" in out["error"], out["error"]
    assert 'mlflow_server_db_server_version: "15"' in out["error"], out["error"]
    assert after["current"] == state["previous"], "migrated although the backup was refused"


def host_state(h):
    """What a refused run must leave as it was: packages, the running server, the unit and env files."""
    return {
        "packages": h.check_output("dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n'"),
        "pid": h.check_output("systemctl show -P MainPID mlflow.service"),
        "files": h.check_output("sha256sum /etc/systemd/system/mlflow.service /etc/mlflow/mlflow.env"),
        "venvs": h.check_output("ls /opt/mlflow/venvs"),
    }


def test_server_newer_than_the_offered_client_stops_before_any_change(host):
    """The group is told the server runs PostgreSQL 17: Debian 13 (-b) offers postgresql-client-17,
    Debian 12 (-a) only 15, whose pg_dump would refuse the server at the next upgrade. The play stops
    on every host after the package cache refresh and before any install, naming both versions, the
    missing package, the variable and the fix; nothing changed, the servers keep serving."""
    if not name(host).endswith("-a"):
        pytest.skip("one run for the group")
    hosts = [RUNNER.get_host(h) for h in testinfra_hosts]
    before = [host_state(h) for h in hosts]
    run = converge({"mlflow_server_db_server_version": "17"})
    out = run.stdout + run.stderr
    print("\n".join(line for line in out.splitlines() if "PostgreSQL 17" in line)[-1500:])
    assert run.returncode != 0, out[-3000:]
    msg = re.search(r"The database server runs PostgreSQL 17 .*?Nothing was installed or configured\.", out, re.S)
    assert msg, out[-3000:]
    msg = " ".join(msg.group(0).split())
    assert f"on {name(host)} offers the PostgreSQL client 15 only" in msg, msg
    assert "the package postgresql-client-17 is not available" in msg, msg
    assert "mlflow_server_db_server_version=17" in msg and "PGDG" in msg, msg
    assert "TASK [mlflow_server : Install OS packages" not in out, "a host went on to install packages"
    assert DB_PASSWORD not in out and ADMIN_PASSWORD not in out
    assert [host_state(h) for h in hosts] == before
    for h in hosts:
        test_health_is_unauthenticated_but_the_api_is_not(h)


# ---- restarts: one server at a time, each healthy before the next ------------------------

RESTART_PY = """\
import json, subprocess, threading, time, urllib.request
url = "http://127.0.0.1:5000/health"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def healthy():
    try:
        with opener.open(url, timeout=2) as r:
            return r.status == 200
    except Exception:
        return False
seen, stop = [], threading.Event()
def poll():
    while not stop.is_set():
        start = time.monotonic()
        seen.append((start, healthy()))
        time.sleep(0.1)
t0 = time.monotonic()
poller = threading.Thread(target=poll)
poller.start()
rc = subprocess.run(["systemctl", "restart", "mlflow.service"]).returncode
returned = time.monotonic() - t0
right_after = healthy()
stop.set()
poller.join()
down = [t - t0 for t, ok in seen if not ok]
up = [t - t0 for t, ok in seen if ok and down and t - t0 > down[0]]
print(json.dumps({"rc": rc, "returned": returned, "healthy_right_after": right_after,
                  "first_down": down[0] if down else None, "first_up": up[0] if up else None}))
"""


def test_restart_returns_only_once_healthy(host):
    """The unit's ExecStartPost= gate polls /health: `systemctl restart` returns only once the new
    server answers 200 (one request right after it returns, no retry), measured against a poller
    that sees the server go down and come back."""
    post = host.check_output("systemctl show -P ExecStartPost mlflow.service")
    assert "/opt/mlflow/bin/mlflow-health-gate.py" in post and ":5000/health" in post, post
    pid = host.check_output("systemctl show -P MainPID mlflow.service")
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    m = json.loads(host.check_output(f"python3 -c {shlex.quote(RESTART_PY)}"))
    print(f"{name(host)}: restart returned after {m['returned']:.1f} s; the poller saw /health fail at "
          f"+{m['first_down']:.1f} s and answer 200 again at +{(m['first_up'] or 0):.1f} s")
    assert m["rc"] == 0, m
    assert m["first_down"] is not None and m["first_down"] < m["returned"], f"the server never went down: {m}"
    assert m["healthy_right_after"], f"systemctl restart returned before /health answered 200: {m}"
    assert host.check_output("systemctl show -P ActiveState mlflow.service") == "active"
    assert host.check_output("systemctl show -P MainPID mlflow.service") != pid
    journal = host.check_output(f"journalctl -u mlflow.service --since {shlex.quote(since)} --no-pager -o cat")
    assert re.search(r":5000/health answered 200 after [0-9.]+ s", journal), journal[-2000:]


NEVER_HEALTHY = "/run/systemd/system/mlflow.service.d/zz-molecule-never-healthy.conf"


def unit_times(h):
    """When the server last left the active state, last began to start, and last entered the active
    state (monotonic µs, one clock for all containers); with the gate, 'active' means /health answered."""
    props = h.check_output("systemctl show -p ActiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic "
                           "-p InactiveExitTimestampMonotonic mlflow.service")
    return {k: int(v) for k, v in (line.split("=", 1) for line in props.splitlines())}


SERVICE_PHASE = "mlflow_server_service"


def test_rollout_stops_at_an_unhealthy_server_and_goes_one_at_a_time(host):
    """A change that restarts the group: with -a made unable to serve (a drop-in runs a process that
    never listens, and gives the gate 15 s), its restart fails at the gate and the rollout stops
    there: -b is not restarted and keeps serving. Then, with -a fixed, the role restarts -a, and -b
    only once -a is healthy again. Both runs are the service phase alone (--tags
    mlflow_server_service, the README's way to change the unit), which also checks that the phase
    runs on its own."""
    if not name(host).endswith("-a"):
        pytest.skip("one rollout for the group")
    other = RUNNER.get_host([h for h in testinfra_hosts if h.endswith("-b")][0])
    other_pid = other.check_output("systemctl show -P MainPID mlflow.service")
    gate = host.check_output("systemctl show -P ExecStartPost mlflow.service")
    gate = re.search(r"argv\[\]=(\S+ \S+ \S+) ", gate).group(1)  # python, gate script, URL
    host.check_output(f"mkdir -p {os.path.dirname(NEVER_HEALTHY)} && printf '%s\\n' '[Service]' 'ExecStart=' "
                      f"'ExecStart=/bin/sleep infinity' 'ExecStartPost=' 'ExecStartPost={gate} 15' > {NEVER_HEALTHY}")
    try:
        # Any change to the unit restarts the group; this one is harmless.
        failed = converge({"mlflow_server_limit_nofile": 65000}, tags=SERVICE_PHASE)
    finally:
        host.check_output(f"rm -f {NEVER_HEALTHY} && systemctl daemon-reload")
    out = failed.stdout + failed.stderr
    print("\n".join(line for line in out.splitlines() if "(item=" in line)[-1500:])
    assert failed.returncode != 0, out[-3000:]
    assert re.search(rf"failed: \[[^\]]+ -> {re.escape(name(host))}\] \(item={re.escape(name(host))}\)|"
                     rf"failed: \[{re.escape(name(host))}\] \(item={re.escape(name(host))}\)", out), out[-3000:]
    assert f"(item={name(other)})" not in out, "the rollout went on to the next server"
    assert other.check_output("systemctl show -P MainPID mlflow.service") == other_pid
    test_health_is_unauthenticated_but_the_api_is_not(other)
    # Without the drop-in, systemd's own restart (Restart=on-failure) brings -a back.
    host.run("for i in $(seq 240); do [ \"$(systemctl show -P ActiveState mlflow.service)\" = active ] && break; sleep 1; done")
    assert host.check_output("systemctl show -P ActiveState mlflow.service") == "active"

    start = int(host.check_output("python3 -c 'import time; print(time.monotonic_ns() // 1000)'"))
    fixed = converge(tags=SERVICE_PHASE)
    out = fixed.stdout + fixed.stderr
    assert fixed.returncode == 0, out[-3000:]
    order = re.findall(r"\(item=([^)]+)\)", out.split("Restart the marked servers")[1].split("RUNNING HANDLER")[0])
    assert order == [name(host), name(other)], order
    a, b = unit_times(host), unit_times(other)
    # -a became healthy during this run, and only then did -b go down.
    assert start < a["ActiveEnterTimestampMonotonic"] <= b["ActiveExitTimestampMonotonic"] < b["ActiveEnterTimestampMonotonic"], (a, b)
    print(f"rollout: {name(host)} started {(a['InactiveExitTimestampMonotonic'] - start) / 1e6:.1f} s into the run and "
          f"was healthy {(a['ActiveEnterTimestampMonotonic'] - a['InactiveExitTimestampMonotonic']) / 1e6:.1f} s later; "
          f"{name(other)} went down {(b['ActiveExitTimestampMonotonic'] - a['ActiveEnterTimestampMonotonic']) / 1e6:.1f} s "
          f"after that and was healthy again {(b['ActiveEnterTimestampMonotonic'] - b['ActiveExitTimestampMonotonic']) / 1e6:.1f} s later")
    for h in (host, other):
        test_health_is_unauthenticated_but_the_api_is_not(h)
