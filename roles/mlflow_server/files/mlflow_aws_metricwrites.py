# Installed by the mlflow_server role (mlflow_server_fast_metric_writes). Do not edit by hand.
"""Metric writes without an ORM object per metric, for MLflow's SqlAlchemyStore (the pinned MLflow 3.17).

MLflow's ``_log_metrics_once`` builds one ORM object (``SqlMetric``) per metric and lets the
session's unit of work insert them: for a ``log_batch`` of 1,000 metrics that is about half of the
whole call's CPU (measured in-process against PostgreSQL: 206 ms of CPU per call with MLflow's,
96-102 ms with this one). This replacement inserts the same rows with one bulk INSERT of plain
parameter sets (SQLAlchemy's ORM bulk insert: the same table, columns and values), and gives
MLflow's own ``_update_latest_metrics_if_necessary`` the same values it would have read from the
objects. Everything else is MLflow's, in the same order, in the same transaction: the validation of
each metric (with the same error paths), dropping repeats inside the batch, the check that the run
is active, the latest-metric rows.

When the insert hits a metric that is already stored (an IntegrityError: a client retrying a
batch), the transaction is rolled back and MLflow's own function does the whole write again,
with its recovery (it inserts only the metrics not yet stored). So the rows written are always
those MLflow would have written (tests/test_metricwrites.py compares the two on the same calls).

The request is parsed once. basic-auth's permission check of a ``log_batch`` parses the whole
body into protobuf (to find metrics that name a logged model), and the handler then parses the
same body into the same message again: profiled under 16 writers, parsing was 24 % of the server's
CPU, half of it the second parse. ``parse_dict_once`` (in place of ``parse_dict`` in MLflow's
handlers, which both parses go through) remembers, for the current request, what the request's own
JSON body parsed into, per message type, and gives the second caller a copy of it (or the same
error). Any other dict, or a body parsed into a message that was not empty, is parsed as before.

``install`` makes each replacement only if MLflow's functions are the ones this was written
against (checksums of their source); otherwise it leaves MLflow's in place and says why. Imported
by mlflow_aws_authcache in each server worker.
"""

import inspect
import zlib
from collections import namedtuple

import flask
import mlflow.server.handlers as _handlers
import sqlalchemy
from mlflow.store.tracking.dbmodels.models import SqlMetric
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore, _validate_metric
from mlflow.utils import proto_json_utils

# CRC32 of the source of MLflow's functions, in the version this was written for.
EXPECTED = {
    "_log_metrics_once": 0x8B18E109,  # replaced
    "_update_latest_metrics_if_necessary": 0xB093F44D,  # called with MetricRow values
}

# The request parser that calls parse_dict (handlers' name for it) and parse_dict itself.
EXPECTED_PARSE = {
    "_get_request_message": 0x5D1E85FD,
    "parse_dict": 0x38DAD91D,
}

# What _update_latest_metrics_if_necessary reads of each logged metric (SqlMetric's columns).
MetricRow = namedtuple("MetricRow", "run_uuid key value timestamp step is_nan")

_original = None
_original_parse_dict = proto_json_utils.parse_dict


def source_crc(func):
    return zlib.crc32(inspect.getsource(func).encode()) & 0xFFFFFFFF


def _log_metrics_once(self, run_id, metrics):
    # MLflow's validation and de-duplication, unchanged: a repeated metric is written once.
    rows = []
    seen = set()
    is_single_metric = len(metrics) == 1
    for idx, metric in enumerate(metrics):
        _validate_metric(
            metric.key,
            metric.value,
            metric.timestamp,
            metric.step,
            path="" if is_single_metric else f"metrics[{idx}]",
        )
        if metric not in seen:
            is_nan, value = self.sanitize_metric_value(metric.value)
            rows.append(MetricRow(run_id, metric.key, value, metric.timestamp, metric.step, is_nan))
        seen.add(metric)

    with self.ManagedSessionMaker(read_only=False) as session:
        run = self._get_run(run_uuid=run_id, session=session)
        self._check_run_is_active(run)
        try:
            if rows:
                session.execute(sqlalchemy.insert(SqlMetric), [row._asdict() for row in rows])
            self._update_latest_metrics_if_necessary(rows, session)
            session.commit()
            return
        except sqlalchemy.exc.IntegrityError:
            session.rollback()
    # A metric of the batch is already stored: MLflow's own write, with its recovery.
    _original(self, run_id, metrics)


def parse_dict_once(js_dict, message):
    """parse_dict, once per request for the request's own JSON body and message type."""
    # A GET's message comes from its query string (a new dict each time); other bodies are the
    # request's JSON, which MLflow's handlers read with get_json(force=True, silent=True) (cached).
    if (js_dict is None or not flask.has_request_context() or flask.request.method == "GET"
            or message.ByteSize() or js_dict is not flask.request.get_json(force=True, silent=True)):
        return _original_parse_dict(js_dict, message)
    memo = flask.g.get("_mlflow_aws_parsed")
    if memo is None:
        memo = flask.g._mlflow_aws_parsed = {}
    key = message.DESCRIPTOR.full_name
    if key in memo:
        parsed, error = memo[key]
        message.CopyFrom(parsed)
        if error is not None:
            raise type(error)(*error.args)
        return None
    error = None
    try:
        _original_parse_dict(js_dict, message)
    except Exception as exc:  # remembered as it is (a ParseError: what parsed until then stays)
        error = exc
    parsed = type(message)()
    parsed.CopyFrom(message)
    memo[key] = (parsed, error)
    if error is not None:
        raise error
    return None


def install_parse_once():
    """Put parse_dict_once in place of parse_dict in MLflow's handlers. Returns (replaced, why not)."""
    if _handlers.parse_dict is parse_dict_once:
        return True, ""
    if _handlers.parse_dict is not _original_parse_dict:
        return False, "handlers.parse_dict is not proto_json_utils.parse_dict"
    for name, func in (("_get_request_message", _handlers._get_request_message), ("parse_dict", _original_parse_dict)):
        crc = source_crc(func)
        if crc != EXPECTED_PARSE[name]:
            return False, f"{name}: source differs (crc32 {crc:#010x})"
    _handlers.parse_dict = parse_dict_once
    return True, ""


def install():
    """Replace SqlAlchemyStore._log_metrics_once. Returns (replaced, why not)."""
    global _original
    current = SqlAlchemyStore._log_metrics_once
    if current is _log_metrics_once:
        return True, ""
    for name, expected in EXPECTED.items():
        crc = source_crc(getattr(SqlAlchemyStore, name))
        if crc != expected:
            return False, f"{name}: source differs (crc32 {crc:#010x})"
    _original = current
    SqlAlchemyStore._log_metrics_once = _log_metrics_once
    return True, ""
