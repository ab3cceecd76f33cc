"""Verify the front door (mlflow_server + mlflow_proxy + mlflow_auth) from the control
node, over the scenario's docker network, like a client on the team's network would."""

import glob
import hashlib
import json
import os
import re
import shlex
import socket
import ssl
import tempfile
import sys
import time
from pathlib import Path

import pytest
import requests
import testinfra.utils.ansible_runner
from conftest import EXPERIMENT, MODEL
from mlflow.exceptions import MlflowException

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from pins import MLFLOW_VERSION  # noqa: E402

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("test_hosts")

# Paths of the API (REST and the UI's ajax twin), the UI, the artifact proxy and the
# routes MLflow itself leaves open (server-info, static assets): all closed without
# credentials. Only /health stays open.
CLOSED_PATHS = [
    "/",
    "/index.html",
    "/static-files/index.html",
    "/favicon.ico",
    "/signup",
    "/version",
    "/graphql",
    "/api/2.0/mlflow/experiments/search?max_results=1",
    "/ajax-api/2.0/mlflow/experiments/search?max_results=1",
    "/api/2.0/mlflow/users/current",
    "/api/3.0/mlflow/server-info",
    "/api/2.0/mlflow-artifacts/artifacts",
    "/ajax-api/2.0/mlflow-artifacts/artifacts",
    "/get-artifact?path=x&run_uuid=y",
]


# ---- on the host (testinfra) ----------------------------------------------------


def test_mlflow_is_bound_to_loopback_and_nginx_to_the_network(host):
    listening = host.check_output("ss -Hltn | awk '{print $4}'").split()
    assert "127.0.0.1:5000" in listening
    assert not any(a.endswith(":5000") and not a.startswith("127.0.0.1") for a in listening), listening
    assert "0.0.0.0:443" in listening and "0.0.0.0:80" in listening


def test_nginx_config_checks_and_logs_request_time(host, base, ca):
    assert host.run("nginx -t").rc == 0
    assert "rt=$request_time" in host.file("/etc/nginx/nginx.conf").content_string
    # One request of our own, so the log has a line whatever the tests' order.
    requests.get(f"{base}/health", headers={"Authorization": "Basic bm90OnNlY3JldA=="}, verify=ca, timeout=10)
    log = host.file("/var/log/nginx/mlflow-access.log").content_string
    assert re.search(r" rt=\d+\.\d{3} ", log), log[-500:]
    assert "Authorization" not in log and "Basic " not in log


def test_tls_keys_are_private(host):
    for key in ("/etc/nginx/mlflow-tls/server.key", "/etc/nginx/mlflow-tls/ca.key"):
        f = host.file(key)
        assert f.user == "root" and f.mode == 0o600, key


# ---- from the network --------------------------------------------------------------


def test_http_only_redirects_to_https(ip):
    r = requests.get(f"http://{ip}/api/2.0/mlflow/experiments/search?max_results=1", allow_redirects=False, timeout=10)
    assert r.status_code == 301
    assert r.headers["Location"] == f"https://{ip}/api/2.0/mlflow/experiments/search?max_results=1"
    r = requests.post(f"http://{ip}/api/2.0/mlflow/runs/create", json={}, allow_redirects=False, timeout=10)
    assert r.status_code == 301


def _handshake(ip, ca, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    # Let this client offer the old versions: the refusal must come from the server.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = version
    ctx.maximum_version = version
    with socket.create_connection((ip, 443), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=ip) as tls:
            return tls.version()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"])
def test_old_tls_versions_are_refused(ip, ca, version):
    with pytest.raises(ssl.SSLError) as err:
        _handshake(ip, ca, version)
    # The server's alert, not a local "no protocols available".
    assert "PROTOCOL_VERSION" in str(err.value).upper() or "UNSUPPORTED_PROTOCOL" in str(err.value).upper(), err.value


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLSv1.2", "TLSv1.3"])
def test_tls_12_and_13_are_accepted_with_a_verified_certificate(ip, ca, version):
    assert _handshake(ip, ca, version) in ("TLSv1.2", "TLSv1.3")


def test_hsts(base, ca):
    r = requests.get(f"{base}/health", verify=ca, timeout=10)
    assert r.status_code == 200
    assert r.headers["Strict-Transport-Security"].startswith("max-age=31536000")


@pytest.mark.parametrize("path", CLOSED_PATHS)
def test_without_credentials_everything_but_health_is_401(base, ca, path):
    r = requests.get(base + path, verify=ca, timeout=30, allow_redirects=False)
    assert r.status_code == 401, (path, r.status_code, r.text[:200])
    assert r.headers.get("WWW-Authenticate", "").startswith("Basic")


def test_without_credentials_writes_are_401(base, ca):
    r = requests.post(f"{base}/api/2.0/mlflow/experiments/create", json={"name": "anon"}, verify=ca, timeout=30)
    assert r.status_code == 401
    r = requests.put(f"{base}/api/2.0/mlflow-artifacts/artifacts/0/x.txt", data=b"x", verify=ca, timeout=30)
    assert r.status_code == 401


def test_health_is_open(base, ca):
    r = requests.get(f"{base}/health", verify=ca, timeout=10)
    assert r.status_code == 200 and r.text.strip() == "OK"


@pytest.mark.parametrize("path", ["/", "/api/2.0/mlflow/experiments/search?max_results=1", "/static-files/index.html"])
def test_wrong_password_is_401(base, ca, creds, path):
    r = requests.get(base + path, auth=("alice", creds["alice"] + "x"), verify=ca, timeout=30)
    assert r.status_code == 401, (path, r.status_code)
    r = requests.get(base + path, auth=("nobody", "not-a-password-123"), verify=ca, timeout=30)
    assert r.status_code == 401, (path, r.status_code)


@pytest.mark.parametrize("host_header", ["evil.example.com", "localhost", "127.0.0.1:5000"])
def test_host_outside_the_allowed_list_is_403(ip, base, ca, creds, host_header):
    for auth in (None, ("admin", creds["admin"])):
        r = requests.get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host_header},
                         auth=auth, verify=ca, timeout=30)
        assert r.status_code == 403, (host_header, auth and auth[0], r.status_code)
    r = requests.get(f"http://{ip}/", headers={"Host": host_header}, allow_redirects=False, timeout=10)
    assert r.status_code == 403


def test_ui_answers_with_credentials_and_assets_are_gzipped(base, ca, creds):
    auth = ("alice", creds["alice"])
    r = requests.get(f"{base}/", auth=auth, verify=ca, timeout=30)
    assert r.status_code == 200 and "<html" in r.text.lower()
    assets = re.findall(r'(?:src|href)="(?:\./|/)?(static-files/[^"]+\.(?:js|css))"', r.text)
    assert assets, r.text[:500]
    r = requests.get(f"{base}/{assets[0]}", auth=auth, verify=ca, timeout=30, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers.get("Content-Encoding") == "gzip", (assets[0], r.headers)


def _assert_denied(call, *args):
    with pytest.raises(MlflowException) as err:
        call(*args)
    assert "403" in str(err.value) or "PERMISSION_DENIED" in str(err.value), err.value


def _log_and_read(client, experiment_id, tag):
    run = client.create_run(experiment_id, run_name=f"front-door-{tag}")
    run_id = run.info.run_id
    client.log_param(run_id, "who", tag)
    client.log_metric(run_id, "accuracy", 0.91)
    client.set_terminated(run_id)
    got = client.get_run(run_id)
    assert got.data.params["who"] == tag and got.data.metrics["accuracy"] == pytest.approx(0.91)
    return run_id


def test_admin_logs_and_reads_runs_over_verified_https(tracking, creds):
    client = tracking("admin", creds["admin"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None, "mlflow_auth creates the experiment a grant names"
    _log_and_read(client, exp.experiment_id, "admin")


def test_declared_user_logs_and_reads_runs(tracking, creds):
    client = tracking("alice", creds["alice"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    run_id = _log_and_read(client, exp.experiment_id, "alice")
    runs = client.search_runs([exp.experiment_id])
    assert run_id in [r.info.run_id for r in runs]


def test_read_only_user_reads_but_cannot_write(tracking, creds):
    writer = tracking("alice", creds["alice"])
    exp = writer.get_experiment_by_name(EXPERIMENT)
    run_id = _log_and_read(writer, exp.experiment_id, "for-bob")

    reader = tracking("bob", creds["bob"])
    assert reader.get_run(run_id).data.params["who"] == "for-bob"
    _assert_denied(reader.create_run, exp.experiment_id)
    _assert_denied(reader.log_metric, run_id, "sneaky", 1.0)
    _assert_denied(reader.set_tag, run_id, "sneaky", "yes")
    _assert_denied(reader.delete_run, run_id)
    assert "sneaky" not in writer.get_run(run_id).data.metrics


def test_role_grants_apply_and_nothing_else(tracking, creds):
    carol = tracking("carol", creds["carol"])
    assert carol.get_registered_model(MODEL).name == MODEL  # role model-readers: READ on every model
    # No grant on the experiment and the default permission is none.
    _assert_denied(carol.get_experiment_by_name, EXPERIMENT)


def test_declared_admin_can_manage_users(base, ca, creds):
    r = requests.get(f"{base}/api/2.0/mlflow/users/list", auth=("ops", creds["ops"]), verify=ca, timeout=30)
    assert r.status_code == 200
    users = {u["username"]: u["is_admin"] for u in r.json()["users"]}
    assert users["ops"] is True and users["alice"] is False and "temp" in users
    r = requests.post(f"{base}/api/2.0/mlflow/users/create", json={"username": "eve", "password": "x" * 16},
                      auth=("alice", creds["alice"]), verify=ca, timeout=30)
    assert r.status_code == 403


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_2gib_artifact_round_trip(tracking, creds, tmp_path):
    size = 2 << 30
    src = tmp_path / "up" / "big.bin"
    src.parent.mkdir()
    # Random 1 MiB blocks, each also stamped with its index: no two blocks alike.
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for i in range(size >> 20):
            f.write(i.to_bytes(8, "big") + block[8:])
    assert src.stat().st_size == size
    want = _sha256(src)

    client = tracking("alice", creds["alice"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    run_id = client.create_run(exp.experiment_id, run_name="big-artifact").info.run_id
    t0 = time.monotonic()
    client.log_artifact(run_id, str(src), artifact_path="blobs")
    up = time.monotonic() - t0
    listed = {a.path: a.file_size for a in client.list_artifacts(run_id, "blobs")}
    assert listed.get("blobs/big.bin") == size, listed
    src.unlink()

    dst = tmp_path / "down"
    dst.mkdir()
    t0 = time.monotonic()
    got = client.download_artifacts(run_id, "blobs/big.bin", str(dst))
    down = time.monotonic() - t0
    assert os.path.getsize(got) == size
    assert _sha256(got) == want
    os.unlink(got)
    print(f"2 GiB artifact through the front door: upload {up:.1f} s, download {down:.1f} s, sha256 {want}")


# ---- the server's SQLite + local-artifact mode (on the host) -----------------------


def test_sqlite_and_local_artifacts_belong_to_mlflow(host, creds):
    """This scenario runs mlflow_server in its single-host mode (the seeds' scenario 2):
    both SQLite databases and an artifact put through the proxy (as the admin, on the host)
    are the mlflow user's, private."""
    for path in ("/var/lib/mlflow/mlflow.db", "/var/lib/mlflow/basic_auth.db"):
        f = host.file(path)
        assert f.exists and f.user == "mlflow" and not f.mode & 0o007, path
    put = (
        "import base64,sys,urllib.request\n"
        "r=urllib.request.Request('http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/probe/probe.txt',"
        "data=b'local store',method='PUT')\n"
        "r.add_header('Authorization','Basic '+base64.b64encode(sys.stdin.read().encode()).decode())\n"
        "urllib.request.urlopen(r).read()\n"
    )
    host.check_output(f"printf %s {shlex.quote('admin:' + creds['admin'])} | python3 -c {shlex.quote(put)}")
    assert host.file("/var/lib/mlflow/artifacts/probe/probe.txt").content_string == "local store"
    files = host.check_output("find /var/lib/mlflow/artifacts -type f -printf '%u %m %p\\n'").splitlines()
    assert all(line.split()[0] == "mlflow" and not int(line.split()[1], 8) & 0o007 for line in files), files


def test_installed_offline_from_the_copied_wheelhouse(host):
    """mlflow_server_wheelhouse, the private-subnet path: the control node's wheels were copied
    to the host (nothing is mounted) and every package of the venv is one of those wheels."""
    assert not host.file("/mnt/wheels").exists
    wheels = host.file("/opt/mlflow/wheelhouse")
    assert wheels.is_directory and wheels.user == "root" and wheels.mode == 0o755
    def norm(s):
        return re.sub(r"[-_.]+", "_", s).lower()

    have = {(norm(f.split("-")[0]), f.split("-")[1]) for f in wheels.listdir() if f.endswith(".whl")}
    installed = json.loads(host.check_output("/opt/mlflow/current/bin/pip list --format json --disable-pip-version-check"))
    missing = [p for p in installed if p["name"] not in ("pip", "setuptools") and (norm(p["name"]), p["version"]) not in have]
    assert ("mlflow", MLFLOW_VERSION) in have and not missing, missing
    assert not glob.glob(os.path.join(tempfile.gettempdir(), "ansible.*.wheels.tar")), "the archive was left on the control node"
    print(f"wheelhouse: {len(have)} wheels copied; {len(installed)} packages in the venv, all from them")
