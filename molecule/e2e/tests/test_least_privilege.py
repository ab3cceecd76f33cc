"""MLflow connects to the database as its own role, which owns its two databases and has no
admin rights; the RDS master user only made that role (mlflow-dbctl.py bootstrap, from
mlflow_server_db_admin_user). Checked in the stand-in PostgreSQL, which gives its master user
what RDS gives (CREATEROLE, CREATEDB, no SUPERUSER)."""

import base64
import json
import ssl
import subprocess
import sys
import urllib.request

import pytest
from conftest import CONTROL, DEPLOYMENT, HOST, ROOT, URL, aws, on_host, secret

sys.path.insert(0, str(ROOT / "tests"))
from pins import MLFLOW_VERSION  # noqa: E402

DB = "e2e-db"
TRACKING_DB, AUTH_DB = "mlflow", "mlflow_auth"
DBCTL = [f"/opt/mlflow/venvs/{MLFLOW_VERSION}/bin/python", "/opt/mlflow/bin/mlflow-dbctl.py",
         "--env-file", "/etc/mlflow/mlflow.env"]


def psql(sql, db="postgres"):
    """As the container's superuser: inspection only."""
    res = subprocess.run(["docker", "exec", "-u", "postgres", DB, "psql", "-d", db, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def credentials(kind):
    return json.loads(aws("secretsmanager").get_secret_value(SecretId=f"mlflow/{DEPLOYMENT}/{kind}")["SecretString"])


@pytest.fixture(scope="module")
def app():
    return credentials("db-app")["username"]


@pytest.fixture(scope="module")
def master():
    return credentials("db-master")


def dbctl(command, stdin=""):
    """mlflow-dbctl.py on the host as the role runs it: settings from the environment file,
    the administrator's credentials (bootstrap) on stdin."""
    res = subprocess.run(["docker", "exec", "-i", HOST, *DBCTL, command], input=stdin,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def bootstrap(master):
    return dbctl("bootstrap", json.dumps({"username": master["username"], "password": master["password"]}))


def test_the_role_is_not_the_master_and_has_no_admin_rights(app, master):
    assert app == "mlflow" and app != master["username"]
    assert psql(f"SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = '{app}'") == "t|f|f|f"
    # The stand-in's master is what RDS's is: no superuser.
    assert psql(f"SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = '{master['username']}'") == "f|t|t"


def test_the_role_owns_both_databases_and_everything_in_them(app):
    owners = psql(f"SELECT datname || '=' || pg_get_userbyid(datdba) FROM pg_database "
                  f"WHERE datname IN ('{TRACKING_DB}', '{AUTH_DB}') ORDER BY 1").split()
    assert sorted(owners) == sorted([f"{AUTH_DB}={app}", f"{TRACKING_DB}={app}"]), owners
    for db, at_least in ((TRACKING_DB, 20), (AUTH_DB, 4)):
        rows = psql("SELECT c.relname || '=' || pg_get_userbyid(c.relowner) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'v')",
                    db).split()
        assert len(rows) >= at_least, (db, rows)
        assert [r for r in rows if not r.endswith(f"={app}")] == [], db


def test_the_server_holds_only_its_own_credentials(app, master):
    env = on_host("cat", "/etc/mlflow/mlflow.env").stdout
    assert f"://{app}@" in env
    assert master["username"] not in env
    # The pattern on stdin, not in grep's arguments.
    found = subprocess.run(["docker", "exec", "-i", HOST, "grep", "-rlF", "-f", "/dev/stdin", "/etc/mlflow", "/opt/mlflow",
                            "/var/log", "/root", "/home"], input=master["password"] + "\n", capture_output=True, text=True,
                           check=False)
    assert found.returncode == 1 and not found.stdout, f"the master password is on the host: {found.stdout} {found.stderr}"


def test_the_servers_sessions_are_the_roles(app, master):
    # A request that reads both databases (auth, then tracking), so the pools hold connections.
    ctx = ssl.create_default_context(cafile=str(CONTROL / "front-door-ca.pem"))
    req = urllib.request.Request(f"{URL}/api/2.0/mlflow/experiments/search?max_results=1", headers={
        "Authorization": "Basic " + base64.b64encode(f"admin:{secret('admin')}".encode()).decode()})
    with urllib.request.urlopen(req, context=ctx, timeout=60) as resp:
        assert resp.status == 200
    users = psql(f"SELECT datname || '=' || usename FROM pg_stat_activity WHERE backend_type = 'client backend' "
                 f"AND datname IN ('{TRACKING_DB}', '{AUTH_DB}') AND pid <> pg_backend_pid()").split()
    assert f"{TRACKING_DB}={app}" in users and f"{AUTH_DB}={app}" in users, users
    assert not [u for u in users if u.endswith("=" + master["username"])], users


def test_bootstrap_hands_over_what_the_master_made_and_rotates_the_password(app, master):
    """An earlier deployment's objects (made as the master) and a password changed behind the
    role's back: one bootstrap mends both, the next changes nothing."""
    psql(f"SET ROLE {master['username']}; CREATE TABLE adopt_probe (id serial PRIMARY KEY); CREATE SEQUENCE adopt_seq",
         TRACKING_DB)
    psql(f"ALTER ROLE {app} PASSWORD 'not-the-one-in-the-secret'")
    try:
        first = bootstrap(master)
        assert first["changed"], first
        assert f"set the password of role {app}" in first["actions"], first
        assert f"database {TRACKING_DB}: 2 objects of {master['username']} -> {app}" in first["actions"], first
        owners = psql("SELECT string_agg(relname || '=' || pg_get_userbyid(relowner), ' ' ORDER BY relname) FROM pg_class "
                      "WHERE relname IN ('adopt_probe', 'adopt_probe_id_seq', 'adopt_seq')", TRACKING_DB)
        assert owners == f"adopt_probe={app} adopt_probe_id_seq={app} adopt_seq={app}"
        second = bootstrap(master)
        assert not second["changed"], second
    finally:
        psql("DROP TABLE IF EXISTS adopt_probe; DROP SEQUENCE IF EXISTS adopt_seq", TRACKING_DB)
    # New connections with the server's password (the environment file's) work again.
    assert not dbctl("status")["needed"]
