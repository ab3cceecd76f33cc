"""Unit tests of the credential single flight in roles/mlflow_server/files/mlflow_aws_authcache.py.

The module patches MLflow's basic-auth app in each server worker; the project venv has no
basic-auth extras (flask_wtf), so it is loaded here against a stand-in for `mlflow.server.auth`
that has what the replacement touches: the credential cache, its lock and key, and an
`_authenticate_cached` that behaves like MLflow 3.17's (cache, else verify and fill the cache;
a wrong password is never cached). Its verification counts how many run, and how many at once.
The deployed module, with the real MLflow, is checked in molecule/front_door (test_lookup_cache).
"""

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
    auth = StandInAuth()
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
