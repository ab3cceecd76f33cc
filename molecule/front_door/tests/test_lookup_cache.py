"""basic-auth's lookup cache (mlflow_server_auth_lookup_cache, roles/mlflow_server/files/
mlflow_aws_authcache.py): on in every worker (with TCP_NODELAY on the worker's listening socket),
and what it must not change. A run's experiment is cached. Grants are cached for the credential
cache's window (mlflow_server_auth_grants_cache, the default): a new or widened grant takes effect
at the very next request on every worker, even for a run whose experiment every worker has cached;
a revoked one stops working on every worker within the window. A user's admin flag is cached for
the same window: taken away, it stops working within that window."""

import os
import secrets
import time

import pytest
import requests
import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("test_hosts")

SERVER_CACHE_S = 30  # mlflow_server_auth_cache_ttl_seconds (role default)
MARGIN_S = 10        # scheduling slack on a loaded 2-core test machine
# Enough requests that each of the server's workers (4 on the scenario's host) answers some.
ROUNDS = 16
PATCHED = "['_run_requirement', 'sender_is_admin', 'resolve_permissions', '_invalidate_user_auth_cache', '_redact_run_response', '_authenticate_cached', 'redact_metric_history_model_ids', 'authorize']"


class Client:
    def __init__(self, base, ca, auth):
        self.base, self.ca, self.auth = base, ca, auth

    def call(self, method, path, **kw):
        return requests.request(method, self.base + path, auth=self.auth, verify=self.ca, timeout=60, **kw)

    def ok(self, method, path, **kw):
        r = self.call(method, path, **kw)
        assert r.status_code == 200, (method, path, r.status_code, r.text[:300])
        return r.json() if r.content else {}

    def statuses(self, method, path, **kw):
        return sorted({self.call(method, path, **kw).status_code for _ in range(ROUNDS)})


@pytest.fixture()
def newcomer(base, ca, creds):
    """A new user without grants, and an experiment with one run (a metric logged) made by the
    admin; the user is deleted afterwards."""
    admin = Client(base, ca, ("admin", creds["admin"]))
    tag = secrets.token_hex(3)
    user, password = f"lookup-{tag}", secrets.token_urlsafe(18)
    admin.ok("POST", "/api/2.0/mlflow/users/create", json={"username": user, "password": password})
    try:
        exp_id = admin.ok("POST", "/api/2.0/mlflow/experiments/create", json={"name": f"lookup-cache-{tag}"})["experiment_id"]
        run_id = admin.ok("POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": exp_id})["run"]["info"]["run_id"]
        admin.ok("POST", "/api/2.0/mlflow/runs/log-metric", json={"run_id": run_id, "key": "loss", "value": 0.5,
                                                                  "timestamp": int(time.time() * 1000), "step": 0})
        yield admin, Client(base, ca, (user, password)), user, exp_id, run_id
    finally:
        admin.call("DELETE", "/api/2.0/mlflow/users/delete", json={"username": user})


def test_every_worker_runs_with_the_lookup_cache(host, base, ca, creds):
    """The module is imported at each worker's first permission check; each says which lookups it
    caches and that metrics are written in bulk, and with the pinned MLflow none is left out (a
    version the modules were not written for leaves the mismatching ones out and logs a warning)."""
    admin = Client(base, ca, ("admin", creds["admin"]))
    for _ in range(ROUNDS):
        admin.ok("GET", "/api/2.0/mlflow/experiments/search", params={"max_results": 1})
    ini = host.file("/etc/mlflow/basic_auth.ini").content_string
    assert "authorization_function = mlflow_aws_authcache:authenticate" in ini
    for name in ("mlflow_aws_authcache.py", "mlflow_aws_metricwrites.py", "mlflow_aws_s3stream.py"):
        module = host.file(f"/opt/mlflow/lib/{name}")
        assert (module.user, module.group, module.mode) == ("root", "root", 0o644), name
    env = dict(line.split("=", 1) for line in host.check_output("grep -E '^MLFLOW_(SQLALCHEMYSTORE|AWS)_' /etc/mlflow/mlflow.env").split())
    assert env["MLFLOW_AWS_FAST_METRIC_WRITES"] == env["MLFLOW_AWS_STREAM_UPLOADS"] == '"true"', env
    if "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE" in env:  # PostgreSQL: slots for half of each worker's pool
        pool, overflow = int(env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"].strip('"')), int(env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"].strip('"'))
        slots = int(env["MLFLOW_AWS_SESSION_SLOTS"].strip('"'))
        assert overflow >= 1 and slots == max((pool + overflow) // 2, 1), env
    else:  # SQLite (this scenario): no pool, no slots
        assert "MLFLOW_AWS_SESSION_SLOTS" not in env, env
        slots = "unlimited"
    invocation = host.check_output("systemctl show -p InvocationID --value mlflow")
    journal = host.check_output(f"journalctl _SYSTEMD_INVOCATION_ID={invocation} --no-pager -o cat"
                                " | grep aws_authcache || true")
    lines = journal.splitlines()
    assert lines, "no worker logged the lookup cache since the server started"
    assert all(f"cached lookups {PATCHED}, left as MLflow has them {{}}, user window {SERVER_CACHE_S} s, "
               f"grants cached {SERVER_CACHE_S} s, denials read again, TCP_NODELAY on 1 listening socket(s), "
               f"metric writes: bulk insert, parsed once, session slots {slots}, "
               "uploads streamed to S3, S3 timeouts 20 s"  # mlflow_server_s3_timeout (role default)
               in line for line in lines), lines
    print(f"{len(lines)} worker(s) logged the lookup cache: {lines[0][-170:]}")


def refused_everywhere_within_the_window(client, method, path, **kw):
    """Poll until every worker refuses the call (ROUNDS requests all 403), for at most the window and
    MARGIN_S; the seconds it took and the statuses seen at each poll."""
    since = time.monotonic()
    seen = []
    while time.monotonic() - since < SERVER_CACHE_S + MARGIN_S:
        seen.append(client.statuses(method, path, **kw))
        if seen[-1] == [403]:
            break
        time.sleep(1)
    took = time.monotonic() - since
    assert seen[-1] == [403], (path, took, seen)
    return took, seen


def test_grants_at_the_next_request_and_revocations_within_the_window_on_every_worker(newcomer):
    admin, them, user, exp_id, run_id = newcomer
    get_run = ("GET", "/api/2.0/mlflow/runs/get")
    history = ("GET", "/api/2.0/mlflow/metrics/get-history")
    run_q = {"params": {"run_id": run_id}}
    hist_q = {"params": {"run_id": run_id, "metric_key": "loss"}}
    log = {"json": {"run_id": run_id, "key": "loss", "value": 0.1, "timestamp": 1, "step": 1}}

    # No grant (the default permission is NO_PERMISSIONS). These requests also fill every
    # worker's run -> experiment cache for this run.
    assert them.statuses(*get_run, **run_q) == [403]
    assert them.statuses(*history, **hist_q) == [403]

    grant = {"username": user, "resource_type": "experiment", "resource_id": exp_id}
    admin.ok("POST", "/api/3.0/mlflow/users/permissions/grant", json={**grant, "permission": "READ"})
    assert them.statuses(*get_run, **run_q) == [200], "a grant must apply at the next request"
    assert them.statuses(*history, **hist_q) == [200]
    assert them.statuses("POST", "/api/2.0/mlflow/runs/log-metric", **log) == [403], "READ must not write"

    admin.ok("POST", "/api/3.0/mlflow/users/permissions/revoke", json=grant)
    admin.ok("POST", "/api/3.0/mlflow/users/permissions/grant", json={**grant, "permission": "EDIT"})
    assert them.statuses("POST", "/api/2.0/mlflow/runs/log-metric", **log) == [200]

    # Narrowed: EDIT -> READ. Every worker that cached EDIT lets the write in for at most the window.
    admin.ok("POST", "/api/3.0/mlflow/users/permissions/revoke", json=grant)
    admin.ok("POST", "/api/3.0/mlflow/users/permissions/grant", json={**grant, "permission": "READ"})
    narrowed, _ = refused_everywhere_within_the_window(them, "POST", "/api/2.0/mlflow/runs/log-metric", **log)
    assert them.statuses(*get_run, **run_q) == [200], "the READ left must still apply"

    admin.ok("POST", "/api/3.0/mlflow/users/permissions/revoke", json=grant)
    revoked, _ = refused_everywhere_within_the_window(them, *get_run, **run_q)
    assert them.statuses(*history, **hist_q) == [403]
    print(f"grants: narrowed EDIT -> READ refused writes on every worker after {narrowed:.1f} s, revoked READ "
          f"refused reads after {revoked:.1f} s (window {SERVER_CACHE_S} s)")
    # A run id that does not exist is denied, not answered from another run's cache entry.
    assert them.statuses("GET", "/api/2.0/mlflow/runs/get", params={"run_id": "0" * 32}) == [403]


def test_admin_flag_taken_away_stops_working_within_the_window(newcomer):
    admin, them, user, exp_id, run_id = newcomer
    admin.ok("PATCH", "/api/2.0/mlflow/users/update-admin", json={"username": user, "is_admin": True})
    # An admin reads a run nobody granted it; every worker caches the flag.
    assert them.statuses("GET", "/api/2.0/mlflow/runs/get", params={"run_id": run_id}) == [200]

    admin.ok("PATCH", "/api/2.0/mlflow/users/update-admin", json={"username": user, "is_admin": False})
    took, seen = refused_everywhere_within_the_window(them, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": run_id})
    print(f"admin flag taken away: refused on every worker after {took:.1f} s (window {SERVER_CACHE_S} s); "
          f"statuses seen {seen[:3]}...{seen[-1:]}")
    assert them.statuses("GET", "/api/2.0/mlflow/runs/get", params={"run_id": run_id}) == [403]
