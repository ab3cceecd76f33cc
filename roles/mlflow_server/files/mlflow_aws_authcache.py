# Installed by the mlflow_server role (mlflow_server_auth_lookup_cache). Do not edit by hand.
"""Lookup caches for MLflow's basic-auth app (the pinned MLflow 3.17).

basic-auth's permission check reads the database several times per request besides the
request's own work (profiled on get_metric_history: 70 % of the Flask time was the check):

* the whole run (``get_run``: run, params, tags, latest metrics, inputs, model inputs and
  outputs: four queries) only to learn the experiment it belongs to;
* the user row, up to three times (``sender_is_admin`` before and after the handler, and the
  user's id for the grants query).

and after the handler, for get_run and search_runs, it parses the whole JSON response back into
protobuf to withhold model links the user may not see (14 % of a search_runs of 100 runs).

This module caches the two facts those lookups produce, per worker process:

* run id -> experiment id, LRU, no expiry: MLflow has no API that moves a run to another
  experiment, so the answer cannot go stale. Only a successful lookup is cached. A miss reads the
  run's row alone (the store's own ``_get_run``: one query, the same scoping and the same
  not-found answer) instead of the whole run.
* username -> (user id, admin flag), for ``auth_cache_ttl_seconds`` (the credential cache's
  window): an admin flag taken away, or a user deleted, is seen within that window, as
  MLflow documents for the credential cache itself; at once on the worker that handled the
  change (MLflow's own invalidation of the credential cache drops it here too).

It skips the parse when the response holds none of the model-link keys (nothing to withhold);
also for get_metric_history, whose redaction parses the whole history back into protobuf only to
clear metrics' model ids (9.5 % of a busy worker's time under 4 readers of 50-step histories).

Credential checks get a single flight: MLflow's credential cache (``_authenticate_cached``) lets
every request of a credential that arrives while its first verification runs verify it again
(profiled under 16 writers: 24 % of the request time was scrypt on such misses, since each entry
expires at the end of the window and CPU contention makes the verification window longer). Here the
requests of one credential verify one at a time: the first fills MLflow's cache, the others then
find it there. A wrong password is still verified on each request, but one at a time per worker,
so one bad credential cannot hold more than one core of it. Different credentials verify in
parallel, as before.

Transport, while it is here (the one module of ours that runs in each worker): uvicorn's workers
accept on a socket rebuilt from their supervisor's, without TCP_NODELAY, and asyncio only sets it
on sockets it knows to be TCP; a response written in two parts (headers, body) then waits for the
peer's delayed ACK, 40 ms, on every reused connection (the front door keeps its connections to
MLflow alive). ``nodelay_listeners`` sets TCP_NODELAY on the worker's listening socket, which the
connections accepted afterwards inherit, and on those it has already accepted.

Grants, with MLFLOW_AWS_GRANTS_CACHE=true (mlflow_server_auth_grants_cache): a permission check
(``authorize``) first decides from the user's grants as this worker read them within the last
``auth_cache_ttl_seconds``; whatever those grants do not allow is decided again from the database,
by MLflow's own function, which also refreshes the cached grants. So a new or widened grant applies
at the next request on every worker, and a revoked or narrowed one (a DENY grant added included)
within the window, like a changed password. Measured: the grants query was the largest part of
basic-auth's check left on a read (bench/README.md). Without it (the default of MLflow), the
grants are read on every check. Listings that filter or redact what a user may see
(``resolve_requirements``, the retention gates) always read them.

S3 timeouts, while it is here: with MLFLOW_AWS_S3_TIMEOUT=N (mlflow_server_s3_timeout), the S3
clients the worker makes wait at most N seconds to connect and N seconds for S3's answer, instead of
botocore's 60 s each (``s3_timeouts``). With botocore's 3 attempts, an artifact call to an S3 that does
not answer then fails after about 3 N seconds: with N = 20, within the MLflow client's own 120 s
request timeout, so the client gets the server's error instead of timing out and retrying the call.

Each patch is made only if the function it replaces is the one this module was written against;
otherwise the server runs without it and says so.

Session slots, while it is here: with MLFLOW_AWS_SESSION_SLOTS=N it lets at most N requests of the
worker at a time into the tracking store's sessions (``gate_sessions``: why, below), N being half
the worker's database pool, so that MLflow's sessions inside sessions cannot exhaust it.

Metric writes, while it is here: with MLFLOW_AWS_FAST_METRIC_WRITES=true in the environment
(mlflow_server_fast_metric_writes), it installs ``mlflow_aws_metricwrites`` (the module next to
this one), which inserts a batch's metrics without an ORM object per metric and parses a request
body once where basic-auth and the handler both parse it.

Artifact uploads, while it is here: with MLFLOW_AWS_STREAM_UPLOADS=true
(mlflow_server_stream_artifact_uploads), it installs ``mlflow_aws_s3stream``, which sends a proxied
upload on to S3 as a multipart upload while it arrives instead of after receiving it whole.

Configured as basic-auth's ``authorization_function`` (basic_auth.ini): MLflow imports this
module in each worker before its first permission check, and ``authenticate`` is MLflow's own
basic-auth authentication.
"""

import contextlib
import inspect
import logging
import os
import socket
import threading
import zlib

from cachetools import LRUCache, TTLCache

import mlflow.server.auth as _auth
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

# A child of MLflow's logger: its handler writes to the journal.
_logger = logging.getLogger("mlflow.aws_authcache")

RUN_CACHE_SIZE = 100_000
USER_CACHE_SIZE = 10_000
GRANTS_CACHE_SIZE = 50_000

# CRC32 of the source of each function replaced here, in the MLflow version this was written
# for (the role's pin). Another version's function may decide differently: it is then left alone.
EXPECTED = {
    "_run_requirement": 0xD0D1517B,
    "sender_is_admin": 0x0E5ED8FA,
    "resolve_permissions": 0x9EF01F86,
    "_invalidate_user_auth_cache": 0xBAF3711D,
    "_redact_run_response": 0x8893AD74,
    "_authenticate_cached": 0xF616F979,
    "redact_metric_history_model_ids": 0x974F4F65,
    "authorize": 0xA39F32CA,
}
# The after-request handlers are looked up in these tables (filled at import), not by name.
HANDLER_TABLES = ("AFTER_REQUEST_PATH_HANDLERS", "AFTER_REQUEST_HANDLERS", "PARAMETERIZED_AFTER_REQUEST_HANDLERS")
# Used, not replaced: the one-row lookup of a run (SqlAlchemyStore._get_run without eager loading).
# With another version's source, a run's first permission check reads the whole run, as MLflow does.
EXPECTED_STORE_GET_RUN = 0x28004045
# The JSON keys of the model links that _redact_run_response may withhold (proto field names and
# their camelCase form). A response without any of them has nothing to withhold.
MODEL_LINK_KEYS = tuple(f'"{key}"'.encode() for key in
                        ("model_inputs", "model_outputs", "model_id", "modelInputs", "modelOutputs", "modelId"))

_lock = threading.Lock()
_run_experiment = LRUCache(maxsize=RUN_CACHE_SIZE)
_one_row_lookup = False  # set by _install when SqlAlchemyStore._get_run is the expected one
# Credential-cache key -> [lock, number of requests holding or waiting for it]; an entry lives only
# while a request of that credential is checking it, so the map holds no more than the requests
# in flight.
_flights = {}
_ttl = max(0, int(getattr(_auth.auth_config, "auth_cache_ttl_seconds", 0) or 0))
_user_facts = TTLCache(maxsize=USER_CACHE_SIZE, ttl=_ttl) if _ttl else None
# (user id, workspace, resource types) -> the user's grants there, for the same window; only the
# first, cached try of ``authorize`` reads it (``_local.cached``), every other grants read fills it.
_grants = (TTLCache(maxsize=GRANTS_CACHE_SIZE, ttl=_ttl)
           if _ttl and os.environ.get("MLFLOW_AWS_GRANTS_CACHE", "false") == "true" else None)
_local = threading.local()
_originals = {}
STATUS = {"patched": [], "skipped": {}}


def source_crc(func):
    return zlib.crc32(inspect.getsource(func).encode()) & 0xFFFFFFFF


def authenticate():
    """basic-auth's authorization_function: MLflow's own, unchanged."""
    return _auth.authenticate_request_basic_auth()


def experiment_of_run(run_id):
    """The experiment id of a run, from the run's row alone; MLflow's RESOURCE_DOES_NOT_EXIST
    when there is no such run (in this workspace)."""
    store = _auth._get_tracking_store()
    with store.ManagedSessionMaker() as session:
        return str(store._get_run(session=session, run_uuid=run_id).experiment_id)


def _run_requirement(run_id, action):
    with _lock:
        experiment_id = _run_experiment.get(run_id)
    if experiment_id is None:
        if not (_one_row_lookup and isinstance(_auth._get_tracking_store(), SqlAlchemyStore)):
            resolved = _originals["_run_requirement"](run_id, action)
            if resolved is not None:
                with _lock:
                    _run_experiment[run_id] = resolved[0][1]
            return resolved
        experiment_id = _auth._fetch_or_none(experiment_of_run, run_id)
        if experiment_id is None:
            return None
        with _lock:
            _run_experiment[run_id] = experiment_id
    # What the original builds from run.info.experiment_id (the front_door tests check the decisions).
    experiment = (_auth.RESOURCE_TYPE_EXPERIMENT, experiment_id)
    return experiment, [
        _auth.Requirement(_auth.RESOURCE_TYPE_EXPERIMENT, experiment_id, "read"),
        _auth.Requirement(_auth.RESOURCE_TYPE_RUN, "*", action, fallback_if_no_grant=(experiment,)),
    ]


def user_facts(username):
    """(id, is_admin) of a user, cached for the credential cache's window. Only the replacements
    use it, and _install makes them only when that window is not 0."""
    with _lock:
        facts = _user_facts.get(username)
    if facts is None:
        user = _auth.store.get_user(username)
        facts = (user.id, bool(user.is_admin))
        with _lock:
            _user_facts[username] = facts
    return facts


def sender_is_admin():
    return user_facts(_auth.authenticate_request().username)[1]


def grants_of(user_id, workspace_name, resource_types):
    """The user's grants (MLflow's ``list_grants``): from this worker's cache inside the first try of
    ``authorize``, otherwise from the database, which refreshes the cache."""
    key = (user_id, workspace_name, frozenset(resource_types))
    if _grants is not None and getattr(_local, "cached", False):
        with _lock:
            grants = _grants.get(key)
        if grants is not None:
            return grants
    grants = tuple(_auth.store.list_grants(user_id, workspace_name, set(resource_types)))
    if _grants is not None:
        with _lock:
            _grants[key] = grants
    return grants


def resolve_permissions(username, workspace_name, keys):
    # The original, with the user's id from user_facts instead of a query, and the grants from
    # grants_of.
    grants = grants_of(user_facts(username)[0], workspace_name, {key.resource_type for key in keys})
    if any(_auth.is_workspace_admin_grant(grant) for grant in grants):
        return [_auth.MANAGE] * len(keys)
    return [_auth.fold_grants_for_key(grants, key) for key in keys]


def authorize(username, anchor, requirements):
    """MLflow's, tried first with the grants this worker cached; what those do not allow is
    decided by MLflow's function again with the grants read now (a new grant applies at once)."""
    _local.cached = True
    try:
        if _originals["authorize"](username, anchor, requirements):
            return True
    finally:
        _local.cached = False
    return _originals["authorize"](username, anchor, requirements)


def _invalidate_user_auth_cache(username):
    _originals["_invalidate_user_auth_cache"](username)
    with _lock:
        _user_facts.pop(username, None)


def _authenticate_cached(username, password):
    """MLflow's, with the requests of one credential verifying it one at a time (a single flight):
    the original looks in its cache first, so those that waited find what the first one put there."""
    if _auth._USER_AUTH_CACHE is None:
        return _originals["_authenticate_cached"](username, password)
    key = _auth._auth_cache_key(username, password)
    with _auth._USER_AUTH_CACHE_LOCK:
        cached = _auth._USER_AUTH_CACHE.get(key)
    if cached is not None:
        return cached
    with _lock:
        flight = _flights.setdefault(key, [threading.Lock(), 0])
        flight[1] += 1
    try:
        with flight[0]:
            return _originals["_authenticate_cached"](username, password)
    finally:
        with _lock:
            flight[1] -= 1
            if not flight[1]:
                del _flights[key]


def _redact_run_response(resp, response_message, runs_of):
    if not any(key in resp.get_data() for key in MODEL_LINK_KEYS):
        return None
    return _originals["_redact_run_response"](resp, response_message, runs_of)


def redact_metric_history_model_ids(resp):
    # Withholds only metrics' model_id: a response without the key has none to withhold.
    if not any(key in resp.get_data() for key in MODEL_LINK_KEYS):
        return None
    return _originals["redact_metric_history_model_ids"](resp)


def _in_handler_tables(original, replacement):
    """Put `replacement` wherever basic-auth's after-request tables hold `original`."""
    for table in HANDLER_TABLES:
        handlers = getattr(_auth, table, {})
        for key, handler in list(handlers.items()):
            if handler is original:
                handlers[key] = replacement


def nodelay_listeners():
    """TCP_NODELAY on every TCP socket of this process: the listening one (connections accepted
    later inherit it) and those already accepted (the connection of the request importing this).
    Returns how many listening sockets got it."""
    listeners = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = os.dup(int(name))
        except (OSError, ValueError):
            continue
        try:
            sock = socket.socket(fileno=fd)  # family and type read from the descriptor
        except OSError:
            os.close(fd)
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                listeners += bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
            except OSError:
                continue
    return listeners


def s3_timeouts(seconds):
    """botocore's default connect and read timeouts, for every client this worker makes from now on
    that does not set its own (MLflow's S3 clients set neither; they are made at the first artifact
    call, after this module is imported at the first permission check)."""
    import botocore.config

    defaults = botocore.config.Config.OPTION_DEFAULTS
    defaults["connect_timeout"] = defaults["read_timeout"] = seconds


def gate_sessions(store, slots):
    """Let at most `slots` requests of this worker at a time into the tracking store's sessions;
    the others wait before their first query (no timeout: the front door's bounds the wait).

    MLflow's store opens sessions inside sessions (log_batch holds the run's session while it writes
    the params and the metrics in sessions of their own): a request can hold two connections of a
    worker's pool at once. With more requests in the store than half its pool (pool + overflow),
    each can hold one connection and wait for a second that never frees: they wait out SQLAlchemy's
    pool timeout (30 s) and fail with "QueuePool limit ... reached" (a 400 to the client). Measured
    with 16 and 32 writers on 4 workers of 4 connections each: 7 and 10 failed runs in 30 s, and 30 s
    stalls. A slot is taken by a thread's outermost session and given back when it ends, so with
    slots = (pool + overflow) // 2 the pool cannot run dry, and requests that do not use the store
    (artifact transfers, a hung S3 call) take none. Returns whether the store was gated now."""
    if getattr(store.ManagedSessionMaker, "_mlflow_aws_slots", None):
        return False
    inner = store.ManagedSessionMaker
    slot = threading.BoundedSemaphore(slots)
    depth = threading.local()

    @contextlib.contextmanager
    def managed_session(*args, **kwargs):
        outermost = not getattr(depth, "n", 0)
        if outermost:
            slot.acquire()
        depth.n = getattr(depth, "n", 0) + 1
        try:
            with inner(*args, **kwargs) as session:
                yield session
        finally:
            depth.n -= 1
            if outermost:
                slot.release()

    managed_session._mlflow_aws_slots = slots
    store.ManagedSessionMaker = managed_session
    return True


def _install():
    global _one_row_lookup
    replacements = {
        "_run_requirement": _run_requirement,
        "sender_is_admin": sender_is_admin,
        "resolve_permissions": resolve_permissions,
        "_invalidate_user_auth_cache": _invalidate_user_auth_cache,
        "_redact_run_response": _redact_run_response,
        "_authenticate_cached": _authenticate_cached,
        "redact_metric_history_model_ids": redact_metric_history_model_ids,
        "authorize": authorize,
    }
    if _user_facts is None:
        # No credential cache window configured: user facts and grants would be read every time anyway.
        for name in ("sender_is_admin", "resolve_permissions", "_invalidate_user_auth_cache", "authorize"):
            replacements.pop(name)
            STATUS["skipped"][name] = "auth_cache_ttl_seconds is 0"
    elif _grants is None:
        replacements.pop("authorize")  # not skipped: the grants cache is off (mlflow_server_auth_grants_cache)
    for name, replacement in replacements.items():
        current = getattr(_auth, name, None)
        if current is None:
            STATUS["skipped"][name] = "not in this MLflow"
            continue
        if name == "authorize" and "resolve_permissions" not in STATUS["patched"]:
            # The cached grants are read by our resolve_permissions only (patched before, in this order).
            STATUS["skipped"][name] = "resolve_permissions is MLflow's"
            continue
        if getattr(current, "__module__", "") == __name__:
            STATUS["patched"].append(name)  # imported twice: already in place
            continue
        crc = source_crc(current)
        if crc != EXPECTED[name]:
            STATUS["skipped"][name] = f"source differs (crc32 {crc:#010x})"
            continue
        _originals[name] = current
        setattr(_auth, name, replacement)
        _in_handler_tables(current, replacement)
        STATUS["patched"].append(name)
    crc = source_crc(SqlAlchemyStore._get_run)
    _one_row_lookup = crc == EXPECTED_STORE_GET_RUN
    if not _one_row_lookup:
        STATUS["skipped"]["SqlAlchemyStore._get_run"] = f"source differs (crc32 {crc:#010x})"
    STATUS["nodelay_listeners"] = nodelay_listeners()
    STATUS["session_slots"] = int(os.environ.get("MLFLOW_AWS_SESSION_SLOTS", "0") or 0)
    if STATUS["session_slots"] > 0:
        store = _auth._get_tracking_store()
        if isinstance(store, SqlAlchemyStore):
            gate_sessions(store, STATUS["session_slots"])
        else:
            STATUS["skipped"]["session slots"] = f"the tracking store is a {type(store).__name__}"
    if os.environ.get("MLFLOW_AWS_FAST_METRIC_WRITES", "false") == "true":
        try:
            import mlflow_aws_metricwrites  # installed next to this module by the role
        except ImportError as exc:  # another MLflow, without what it imports
            mlflow_aws_metricwrites = None
            STATUS["skipped"]["metric writes"] = f"not importable: {exc}"
        done = []
        for what, install in (("bulk insert", mlflow_aws_metricwrites.install),
                              ("parsed once", mlflow_aws_metricwrites.install_parse_once)) if mlflow_aws_metricwrites else ():
            replaced, why = install()
            if replaced:
                done.append(what)
            else:
                STATUS["skipped"][what] = why
        STATUS["metric_writes"] = ", ".join(done) or "MLflow's"
    else:
        STATUS["metric_writes"] = "MLflow's (mlflow_server_fast_metric_writes is off)"
    STATUS["uploads"] = "spooled to a temporary file (mlflow_server_stream_artifact_uploads is off)"
    if os.environ.get("MLFLOW_AWS_STREAM_UPLOADS", "false") == "true":
        try:
            import mlflow_aws_s3stream  # installed next to this module by the role
        except ImportError as exc:  # another MLflow, without what it imports
            streamed, why = False, f"not importable: {exc}"
        else:
            streamed, why = mlflow_aws_s3stream.install()
        STATUS["uploads"] = "streamed to S3" if streamed else "spooled to a temporary file"
        if not streamed:
            STATUS["skipped"]["streamed uploads"] = why
    STATUS["s3_timeout"] = int(os.environ.get("MLFLOW_AWS_S3_TIMEOUT", "0") or 0)
    if STATUS["s3_timeout"] > 0:
        s3_timeouts(STATUS["s3_timeout"])
    level = logging.WARNING if STATUS["skipped"] else logging.INFO
    STATUS["grants"] = (f"cached {_ttl} s, denials read again" if "authorize" in STATUS["patched"]
                        else "read on every check")
    _logger.log(level, "mlflow_aws_authcache: cached lookups %s, left as MLflow has them %s, user window %d s, "
                "grants %s, TCP_NODELAY on %d listening socket(s), metric writes: %s, session slots %s, uploads %s, "
                "S3 timeouts %s", STATUS["patched"], STATUS["skipped"], _ttl, STATUS["grants"],
                STATUS["nodelay_listeners"], STATUS["metric_writes"], STATUS["session_slots"] or "unlimited",
                STATUS["uploads"], f"{STATUS['s3_timeout']} s" if STATUS["s3_timeout"] else "botocore's (60 s)")


_install()
