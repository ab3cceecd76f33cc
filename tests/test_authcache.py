"""Unit tests of roles/mlflow_server/files/mlflow_aws_authcache.py: the credential single flight,
the grants cache, the session slots.

The module patches MLflow's basic-auth app in each server worker; the project venv has no
basic-auth extras (flask_wtf), so it is loaded here against a stand-in for `mlflow.server.auth`
that has what the replacements touch: the credential cache, its lock and key, and an
`_authenticate_cached` that behaves like MLflow 3.17's (cache, else verify and fill the cache;
a wrong password is never cached), whose verification counts how many run, and how many at once;
and a grants store with MLflow 3.17's `authorize` -> `resolve_permissions` -> `list_grants` chain,
which counts the grants queries. The deployed module, with the real MLflow, is checked in
molecule/front_door (test_lookup_cache).
"""

import collections
import contextlib
import hashlib
import importlib.util
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from cachetools import TTLCache

MODULE = Path(__file__).resolve().parents[1] / "roles" / "mlflow_server" / "files" / "mlflow_aws_authcache.py"
VERIFY_S = 0.05   # how long a stand-in verification holds its caller (scrypt takes ~85 ms of CPU)
THREADS = 16


class StandInAuth(types.ModuleType):
    """What mlflow.server.auth gives the replacement, with a counting verification."""

    def __init__(self):
        super().__init__("mlflow.server.auth")
        self.auth_config = types.SimpleNamespace(auth_cache_ttl_seconds=30)
        self._USER_AUTH_CACHE = TTLCache(maxsize=100, ttl=30)
        self._USER_AUTH_CACHE_LOCK = threading.Lock()
        self.passwords = {"alice": "right-password-1", "bob": "right-password-2"}
        self.verified = 0
        self.running = 0
        self.most_at_once = 0
        self._count_lock = threading.Lock()

    def _auth_cache_key(self, username, password):
        return (username, hashlib.sha256(password.encode()).digest())

    def _verify(self, username, password):
        with self._count_lock:
            self.verified += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(VERIFY_S)
        with self._count_lock:
            self.running -= 1
        return self.passwords.get(username) == password

    def _authenticate_cached(self, username, password):
        # MLflow 3.17's shape: look in the cache, else verify outside the lock and fill it.
        key = self._auth_cache_key(username, password)
        with self._USER_AUTH_CACHE_LOCK:
            cached = self._USER_AUTH_CACHE.get(key)
        if cached is not None:
            return cached
        if not self._verify(username, password):
            return None
        user = types.SimpleNamespace(username=username)
        with self._USER_AUTH_CACHE_LOCK:
            self._USER_AUTH_CACHE[key] = user
        return user


class StandInStore:
    def _get_run(self, session, run_uuid, eager=False):
        raise AssertionError("not used by these tests")


@pytest.fixture()
def authcache(monkeypatch):
    return load(monkeypatch, StandInAuth())


def load(monkeypatch, auth):
    """The module under test, imported against the stand-in `auth` (its environment as set)."""
    store_module = types.ModuleType("mlflow.store.tracking.sqlalchemy_store")
    store_module.SqlAlchemyStore = StandInStore
    for name in ("mlflow", "mlflow.server", "mlflow.store", "mlflow.store.tracking"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "mlflow.server.auth", auth)
    monkeypatch.setitem(sys.modules, "mlflow.store.tracking.sqlalchemy_store", store_module)
    # No listening socket to touch in the test process.
    monkeypatch.setattr("socket.socket.setsockopt", lambda *a: None, raising=True)
    spec = importlib.util.spec_from_file_location("mlflow_aws_authcache_under_test", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The stand-in's source is not MLflow's, so _install left it alone: wire the replacement by hand.
    assert "_authenticate_cached" in module.STATUS["skipped"]
    module._originals["_authenticate_cached"] = auth._authenticate_cached
    return module, auth


def together(func, calls):
    """Run each call of `calls` (argument tuples) in its own thread, all released at once."""
    start = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def one(i, args):
        start.wait()
        results[i] = func(*args)

    threads = [threading.Thread(target=one, args=(i, args)) for i, args in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a request never got its answer"
    return results


def test_mlflow_s_cache_alone_verifies_a_credential_once_per_concurrent_request(authcache):
    """The control: what the single flight is for. Without it, every request of the credential
    that arrives during the first verification verifies again."""
    _, auth = authcache
    results = together(auth._authenticate_cached, [("alice", "right-password-1")] * THREADS)
    assert all(result is not None for result in results)
    assert auth.verified > 1, auth.verified


def test_concurrent_requests_of_one_credential_verify_it_once(authcache):
    module, auth = authcache
    results = together(module._authenticate_cached, [("alice", "right-password-1")] * THREADS)
    assert all(result is not None and result.username == "alice" for result in results)
    assert auth.verified == 1
    assert module._flights == {}, "the flight outlived its requests"


def test_a_wrong_password_is_verified_each_time_but_one_at_a_time(authcache):
    module, auth = authcache
    results = together(module._authenticate_cached, [("alice", "wrong-password-00")] * 8)
    assert results == [None] * 8, "a wrong password must never be let in or cached"
    assert auth.verified == 8
    assert auth.most_at_once == 1
    assert module._flights == {}
    # The right password still verifies afterwards.
    assert module._authenticate_cached("alice", "right-password-1").username == "alice"


def test_different_credentials_verify_in_parallel(authcache):
    module, auth = authcache
    calls = [("alice", "right-password-1"), ("bob", "right-password-2")] * 4
    results = together(module._authenticate_cached, calls)
    assert [result.username for result in results] == [username for username, _ in calls]
    assert auth.verified == 2
    assert auth.most_at_once == 2


def test_a_cached_credential_is_not_verified_again_and_takes_no_flight(authcache):
    module, auth = authcache
    module._authenticate_cached("bob", "right-password-2")
    together(module._authenticate_cached, [("bob", "right-password-2")] * THREADS)
    assert auth.verified == 1
    assert module._flights == {}


def test_with_mlflow_s_cache_off_each_request_verifies_as_mlflow_does(authcache):
    module, auth = authcache
    auth._USER_AUTH_CACHE = None
    module._originals["_authenticate_cached"] = lambda username, password: auth._verify(username, password)
    assert together(module._authenticate_cached, [("alice", "right-password-1")] * 4) == [True] * 4
    assert auth.verified == 4


class StandInTrackingStore:
    """A pool of 4 connections and MLflow's sessions inside sessions: a log_batch-like request holds
    its outer session's connection while it opens an inner one. A connection not had within the
    pool timeout is a failure (SQLAlchemy's "QueuePool limit ... reached")."""

    POOL, TIMEOUT_S = 4, 1.0

    def __init__(self):
        self.pool = threading.BoundedSemaphore(self.POOL)
        self.failures = 0
        self.in_use = 0
        self.most_in_use = 0
        self._lock = threading.Lock()
        self.ManagedSessionMaker = self._managed_session

    @contextlib.contextmanager
    def _managed_session(self, read_only=True):
        if not self.pool.acquire(timeout=self.TIMEOUT_S):
            with self._lock:
                self.failures += 1
            raise TimeoutError("QueuePool limit reached")
        with self._lock:
            self.in_use += 1
            self.most_in_use = max(self.most_in_use, self.in_use)
        try:
            yield self
        finally:
            with self._lock:
                self.in_use -= 1
            self.pool.release()

    def log_batch(self, _):
        try:
            with self.ManagedSessionMaker(read_only=False):
                time.sleep(VERIFY_S)  # the run's query; then the writes, each in a session of its own
                with self.ManagedSessionMaker(read_only=False):
                    time.sleep(VERIFY_S)
            return "ok"
        except TimeoutError:
            return "failed"


def test_without_session_slots_concurrent_nested_sessions_run_the_pool_dry():
    """The control: what the slots are for. 8 requests that each hold two connections at once, on
    a pool of 4: some wait out the pool timeout."""
    store = StandInTrackingStore()
    assert "failed" in together(store.log_batch, [(n,) for n in range(8)])


def test_session_slots_keep_the_pool_from_running_dry(authcache):
    """gate_sessions with (4 connections) // 2 = 2 slots: the same 8 requests all succeed, never more
    than 4 connections in use; a slot is taken by the outermost session only."""
    module, _ = authcache
    store = StandInTrackingStore()
    assert module.gate_sessions(store, StandInTrackingStore.POOL // 2) is True
    assert module.gate_sessions(store, 2) is False, "gated twice"
    assert together(store.log_batch, [(n,) for n in range(8)]) == ["ok"] * 8
    assert store.failures == 0 and store.most_in_use <= StandInTrackingStore.POOL


# ---- the grants cache (MLFLOW_AWS_GRANTS_CACHE) -------------------------------------------------

RANK = {"READ": 1, "USE": 2, "EDIT": 3, "MANAGE": 4}
Key = collections.namedtuple("Key", "resource_type resource_id")  # MLflow's GrantLoadKey, reduced
NEEDS = {"read": 1, "update": 3, "delete": 4}


class GrantsAuth(StandInAuth):
    """MLflow 3.17's permission check, reduced to its shape: ``authorize`` resolves the keys of the
    requirements through the module-level ``resolve_permissions`` (looked up at call time, so the
    replacement is the one called), which reads the user's grants with ONE ``store.list_grants``
    query. Grants are (resource type, pattern, permission); DENY wins; no grant: denied."""

    def __init__(self):
        super().__init__()
        self.MANAGE = "MANAGE"
        self.grants = {}  # user id -> {(type, pattern): permission}
        self.queries = 0
        self.store = types.SimpleNamespace(list_grants=self._list_grants, get_user=self._get_user)
        self.resolve_permissions = self._resolve_permissions

    def _get_user(self, username):
        return types.SimpleNamespace(id={"alice": 1, "bob": 2}[username], is_admin=False)

    def _list_grants(self, user_id, workspace, resource_types):
        self.queries += 1
        return [(rtype, pattern, perm) for (rtype, pattern), perm in self.grants.get(user_id, {}).items()
                if rtype in resource_types or rtype == "workspace"]

    @staticmethod
    def is_workspace_admin_grant(grant):
        return grant[0] == "workspace" and grant[2] == "MANAGE"

    @staticmethod
    def fold_grants_for_key(grants, key):
        found = [perm for rtype, pattern, perm in grants if rtype == key[0] and pattern in (key[1], "*")]
        return "DENY" if "DENY" in found else max(found, key=RANK.get, default=None)

    def _resolve_permissions(self, username, workspace_name, keys):
        grants = self.store.list_grants(self.get_user(username).id, workspace_name, {k.resource_type for k in keys})
        if any(self.is_workspace_admin_grant(g) for g in grants):
            return [self.MANAGE] * len(keys)
        return [self.fold_grants_for_key(grants, key) for key in keys]

    def get_user(self, username):
        return self.store.get_user(username)

    def authorize(self, username, anchor, requirements):
        keys = [Key(rtype, rid) for rtype, rid, _ in requirements]
        permissions = dict(zip(keys, self.resolve_permissions(username, "default", keys)))
        return all(permissions[(rtype, rid)] not in (None, "DENY") and RANK[permissions[(rtype, rid)]] >= NEEDS[action]
                   for rtype, rid, action in requirements)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture(params=[True, False], ids=["grants-cache-on", "grants-cache-off"])
def grants(request, monkeypatch):
    """The module with the grants cache on (MLFLOW_AWS_GRANTS_CACHE=true) or off, wired to the
    stand-in by hand (its source is not MLflow's, so _install left it alone), on a fake clock."""
    monkeypatch.setenv("MLFLOW_AWS_GRANTS_CACHE", "true" if request.param else "false")
    auth = GrantsAuth()
    module, auth = load(monkeypatch, auth)
    # Cache on: both replacements considered (and left alone: not MLflow's source); off: authorize is
    # not replaced at all.
    assert ("authorize" in module.STATUS["skipped"]) is request.param, module.STATUS
    if request.param:  # never cached grants that nothing would read: resolve_permissions was left as it is
        assert module.STATUS["skipped"]["authorize"] == "resolve_permissions is MLflow's", module.STATUS
    assert "resolve_permissions" in module.STATUS["skipped"], module.STATUS
    clock = Clock()
    if request.param:
        assert module._grants is not None
        module._grants = module.TTLCache(maxsize=100, ttl=30, timer=clock)
    else:
        assert module._grants is None
    module._user_facts = module.TTLCache(maxsize=100, ttl=30, timer=clock)
    module._originals["authorize"] = auth.authorize
    auth.resolve_permissions = module.resolve_permissions
    return module, auth, clock, request.param


READ_EXP = [("experiment", "7", "read")]
WRITE_EXP = [("experiment", "7", "update")]
ANCHOR = ("experiment", "7")


def test_a_check_the_cached_grants_allow_makes_no_query(grants):
    module, auth, _, on = grants
    auth.grants[1] = {("experiment", "7"): "READ"}
    assert [module.authorize("alice", ANCHOR, READ_EXP) for _ in range(5)] == [True] * 5
    assert auth.queries == (1 if on else 5)


def test_a_new_grant_applies_at_the_next_check(grants):
    module, auth, _, on = grants
    assert module.authorize("alice", ANCHOR, READ_EXP) is False
    before = auth.queries
    auth.grants[1] = {("experiment", "7"): "READ"}
    assert module.authorize("alice", ANCHOR, READ_EXP) is True
    # With the cache, the denial by the cached (empty) grants was read again: one more query.
    assert auth.queries == before + 1
    assert module.authorize("alice", ANCHOR, READ_EXP) is True
    assert auth.queries == before + (1 if on else 2)


def test_a_widened_grant_applies_at_the_next_check(grants):
    module, auth, _, _ = grants
    auth.grants[1] = {("experiment", "7"): "READ"}
    assert module.authorize("alice", ANCHOR, READ_EXP) is True
    assert module.authorize("alice", ANCHOR, WRITE_EXP) is False
    auth.grants[1] = {("experiment", "7"): "EDIT"}
    assert module.authorize("alice", ANCHOR, WRITE_EXP) is True


def test_a_revoked_or_narrowed_grant_or_an_added_deny_stops_within_the_window(grants):
    module, auth, clock, on = grants
    for change in ({}, {("experiment", "7"): "READ"}, {("experiment", "7"): "EDIT", ("experiment", "*"): "DENY"}):
        auth.grants[1] = {("experiment", "7"): "EDIT"}
        clock.now += 31  # a new window
        assert module.authorize("alice", ANCHOR, WRITE_EXP) is True
        auth.grants[1] = change
        clock.now += 29
        # Cached: still allowed on this worker until its entry is 30 s old; read: refused at once.
        assert module.authorize("alice", ANCHOR, WRITE_EXP) is on, change
        clock.now += 2
        assert module.authorize("alice", ANCHOR, WRITE_EXP) is False, change


def test_each_user_and_each_set_of_resource_types_has_its_own_entry(grants):
    module, auth, _, on = grants
    auth.grants[1] = {("experiment", "7"): "EDIT"}
    assert module.authorize("alice", ANCHOR, WRITE_EXP) is True
    assert module.authorize("bob", ANCHOR, READ_EXP) is False, "bob has no grant: alice's must not answer"
    auth.grants[1][("run", "*")] = "READ"
    assert module.authorize("alice", ANCHOR, WRITE_EXP + [("run", "*", "read")]) is True


def test_outside_authorize_the_grants_are_always_read(grants):
    """Listings (MLflow's resolve_requirements and retention gates) resolve permissions outside
    authorize: they read the grants each time, and the read refreshes the cache."""
    module, auth, _, on = grants
    auth.grants[1] = {("experiment", "7"): "READ"}
    keys = [Key("experiment", "7")]
    assert module.resolve_permissions("alice", "default", keys) == ["READ"]
    auth.grants[1] = {}
    assert module.resolve_permissions("alice", "default", keys) == [None]
    assert auth.queries == 2
    # ... and what they read is what the next check decides from.
    assert module.authorize("alice", ANCHOR, READ_EXP) is False


# ---- S3 timeouts (MLFLOW_AWS_S3_TIMEOUT) -----------------------------------------------------------

def test_s3_timeouts_apply_to_the_clients_made_afterwards(authcache, monkeypatch):
    """MLflow makes its S3 client with a Config that sets neither timeout: after s3_timeouts(20),
    such a client waits 20 s to connect and 20 s for an answer instead of botocore's 60 s; a
    timeout a Config sets itself still wins."""
    import boto3
    import botocore.config

    module, _ = authcache
    for option in ("connect_timeout", "read_timeout"):
        monkeypatch.setitem(botocore.config.Config.OPTION_DEFAULTS, option, botocore.config.Config.OPTION_DEFAULTS[option])
    assert botocore.config.Config(signature_version="s3v4").read_timeout == 60
    module.s3_timeouts(20)
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y",
                          config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (20, 20)
    assert botocore.config.Config(read_timeout=90).read_timeout == 90
