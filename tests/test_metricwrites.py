"""roles/mlflow_server/files/mlflow_aws_metricwrites.py writes exactly what MLflow's own
SqlAlchemyStore._log_metrics_once writes: the same calls go to two stores (SQLite files), one with
MLflow's function and one with the replacement, and their metrics and latest-metrics tables and
their errors are compared after every call. The PostgreSQL path is exercised through the server
in molecule (front_door, e2e); its speed is in bench/."""

import importlib.util
import itertools
import math
import sqlite3
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

MODULE = Path(__file__).resolve().parents[1] / "roles" / "mlflow_server" / "files" / "mlflow_aws_metricwrites.py"
TS = 1_700_000_000_000
_names = itertools.count()


@pytest.fixture(scope="module")
def metricwrites():
    spec = importlib.util.spec_from_file_location("mlflow_aws_metricwrites_under_test", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module._original = SqlAlchemyStore._log_metrics_once
    return module


@pytest.fixture(scope="module")
def stores(metricwrites, tmp_path_factory):
    """(MLflow's store, the store with the replacement), each with its own SQLite file."""

    class Replaced(SqlAlchemyStore):
        _log_metrics_once = metricwrites._log_metrics_once

    made = []
    for cls in (SqlAlchemyStore, Replaced):
        path = tmp_path_factory.mktemp(cls.__name__) / "mlflow.db"
        made.append((cls(f"sqlite:///{path}", str(path.parent / "artifacts")), path))
    yield made
    for store, _ in made:
        store.engine.dispose()


class Pair:
    """The same call on both stores, with the same run and experiment ids."""

    def __init__(self, stores):
        (self.mlflow, self.mlflow_db), (self.ours, self.ours_db) = stores
        name = f"exp-{next(_names)}"
        self.exp = (self.mlflow.create_experiment(name), self.ours.create_experiment(name))

    def new_run(self):
        runs = [store.create_run(exp, "user", TS, [], "run") for store, exp in zip((self.mlflow, self.ours), self.exp)]
        return tuple(run.info.run_id for run in runs)

    def call(self, runs, method, *args):
        outcomes = []
        for store, run_id in zip((self.mlflow, self.ours), runs):
            try:
                getattr(store, method)(run_id, *args)
                outcomes.append(None)
            except MlflowException as exc:
                outcomes.append((exc.error_code, exc.message.replace(run_id, "<run>")))
        assert outcomes[0] == outcomes[1], outcomes
        return outcomes[0]

    def tables(self, runs):
        """Both stores' metrics and latest_metrics rows of the run, with the run id left out."""
        found = []
        for path, run_id in zip((self.mlflow_db, self.ours_db), runs):
            with sqlite3.connect(path) as db:
                found.append({
                    table: sorted(
                        tuple(repr(v) for v in row)
                        for row in db.execute(f"SELECT key, value, timestamp, step, is_nan FROM {table} WHERE run_uuid = ?", (run_id,))
                    )
                    for table in ("metrics", "latest_metrics")
                })
        return found

    def same_rows(self, runs):
        mlflow, ours = self.tables(runs)
        assert ours == mlflow
        return mlflow


@pytest.fixture()
def pair(stores):
    return Pair(stores)


def batch(keys, steps, value=lambda k, s: k * 0.5 + s, ts=TS):
    return [Metric(f"m{k}", value(k, s), ts + s, s) for k in range(keys) for s in range(steps)]


def test_install_takes_the_pinned_mlflows_functions(metricwrites, monkeypatch):
    monkeypatch.setattr(SqlAlchemyStore, "_log_metrics_once", SqlAlchemyStore._log_metrics_once)
    assert metricwrites.install() == (True, "")
    assert SqlAlchemyStore._log_metrics_once is metricwrites._log_metrics_once
    assert metricwrites.install() == (True, ""), "a second import must leave it in place"


def test_install_leaves_another_versions_function_alone(metricwrites, monkeypatch):
    def _log_metrics_once(self, run_id, metrics):  # another MLflow's
        return None

    monkeypatch.setattr(SqlAlchemyStore, "_log_metrics_once", _log_metrics_once)
    replaced, why = metricwrites.install()
    assert not replaced and why.startswith("_log_metrics_once: source differs"), why
    assert SqlAlchemyStore._log_metrics_once is _log_metrics_once


def test_a_batch_with_repeats_nan_and_infinities(pair):
    runs = pair.new_run()
    metrics = batch(95, 10)
    metrics += metrics[:2]  # repeated inside the batch: written once
    metrics += [Metric("nan", math.nan, TS, 0), Metric("inf", math.inf, TS, 0), Metric("-inf", -math.inf, TS, 1)]
    assert pair.call(runs, "log_batch", metrics, [Param("p", "1")], [RunTag("t", "x")]) is None
    rows = pair.same_rows(runs)
    assert len(rows["metrics"]) == 953 and len(rows["latest_metrics"]) == 98


def test_later_batches_move_the_latest_value_only_forward(pair):
    runs = pair.new_run()
    pair.call(runs, "log_batch", batch(20, 5), [], [])
    # Older steps (latest must not move), newer steps (it must), and new keys.
    pair.call(runs, "log_batch", batch(20, 3, value=lambda k, s: -1.0 - k, ts=TS - 1000), [], [])
    pair.call(runs, "log_batch", [Metric(f"m{k}", 9.0, TS + 50, 7) for k in range(10)] + batch(25, 1), [], [])
    pair.call(runs, "log_metric", Metric("m3", 42.0, TS + 99, 99))
    pair.same_rows(runs)


def test_a_batch_repeating_stored_metrics_writes_only_the_new_ones(pair):
    """A client retrying a batch: the stored metrics are not written twice, the new ones are."""
    runs = pair.new_run()
    first = batch(10, 5)
    pair.call(runs, "log_batch", first, [], [])
    assert pair.call(runs, "log_batch", first[:20] + batch(12, 6, ts=TS + 10_000), [], []) is None
    rows = pair.same_rows(runs)
    assert len(rows["metrics"]) == 50 + 72


def test_an_empty_batch_and_a_single_metric(pair):
    runs = pair.new_run()
    pair.call(runs, "log_batch", [], [Param("only", "params")], [])
    pair.call(runs, "log_metric", Metric("single", 1.5, TS, 0))
    assert len(pair.same_rows(runs)["metrics"]) == 1


@pytest.mark.parametrize("metric", [
    Metric("bad/../key", 1.0, TS, 0),
    Metric("ok", "not a number", TS, 0),
    Metric("ok", 1.0, "not a timestamp", 0),
    Metric("ok", 1.0, TS, "not a step"),
], ids=["key", "value", "timestamp", "step"])
def test_a_bad_metric_gets_mlflows_error_and_writes_nothing(pair, metric):
    runs = pair.new_run()
    error = pair.call(runs, "log_metric", metric)
    assert error is not None
    assert pair.same_rows(runs)["metrics"] == []


def test_a_deleted_run_gets_mlflows_error(pair):
    runs = pair.new_run()
    for store, run_id in zip((pair.mlflow, pair.ours), runs):
        store.delete_run(run_id)
    assert pair.call(runs, "log_batch", batch(2, 2), [], []) is not None
    assert pair.call(runs, "log_metric", Metric("m0", 1.0, TS, 0)) is not None  # checked in the replaced function
    assert pair.same_rows(runs)["metrics"] == []


# --- The request parsed once ---------------------------------------------------------------------


@pytest.fixture()
def parse_count(metricwrites, monkeypatch):
    """Counts the parses that reach protobuf; parse_dict_once in place of handlers' parse_dict."""
    import mlflow.server.handlers as handlers

    calls = []
    original = metricwrites._original_parse_dict

    def counting(js_dict, message):
        calls.append(message.DESCRIPTOR.name)
        return original(js_dict, message)

    monkeypatch.setattr(metricwrites, "_original_parse_dict", counting)
    monkeypatch.setattr(handlers, "parse_dict", metricwrites.parse_dict_once)
    return calls


BODY = {"run_id": "r" * 32, "metrics": [{"key": f"m{i}", "value": i / 3, "timestamp": TS, "step": i} for i in range(50)],
        "params": [{"key": "p", "value": "v"}], "tags": []}


def request_context(method="POST", **kw):
    import flask
    return flask.Flask("metricwrites-test").test_request_context("/api/2.0/mlflow/runs/log-batch", method=method, **kw)


def unpatched(body_or_args, message_type, method="POST"):
    """What MLflow's _get_request_message gives, without the replacement."""
    import mlflow.server.handlers as handlers
    from mlflow.utils.proto_json_utils import parse_dict

    saved, handlers.parse_dict = handlers.parse_dict, parse_dict
    try:
        kw = {"query_string": body_or_args} if method == "GET" else {"json": body_or_args}
        with request_context(method, **kw):
            try:
                return handlers._get_request_message(message_type()), None
            except MlflowException as exc:
                return None, exc.message
    finally:
        handlers.parse_dict = saved


def test_install_parse_once_takes_the_pinned_mlflows_functions(metricwrites, monkeypatch):
    import mlflow.server.handlers as handlers

    monkeypatch.setattr(handlers, "parse_dict", handlers.parse_dict)
    assert metricwrites.install_parse_once() == (True, "")
    assert handlers.parse_dict is metricwrites.parse_dict_once
    assert metricwrites.install_parse_once() == (True, "")


def test_the_permission_check_and_the_handler_share_one_parse(parse_count):
    import mlflow.server.handlers as handlers
    from mlflow.protos.service_pb2 import LogBatch, LogMetric

    expected, _ = unpatched(BODY, LogBatch)
    with request_context(json=BODY):
        checked = handlers._get_request_message(LogBatch())  # basic-auth's validate_can_log_batch
        handled = handlers._get_request_message(LogBatch(), schema={"run_id": [handlers._assert_required]})
        assert checked == handled == expected
        assert handled is not checked
        handled.metrics[0].value = 99.0  # the handler's copy is its own
        assert handlers._get_request_message(LogBatch()) == expected
        handlers._get_request_message(LogMetric())  # another message type: parsed
    assert parse_count == ["LogBatch", "LogMetric"]
    with request_context(json=BODY):  # another request: parsed again
        assert handlers._get_request_message(LogBatch()) == expected
    assert parse_count == ["LogBatch", "LogMetric", "LogBatch"]


def test_a_body_that_does_not_parse_gives_what_mlflow_gives_every_time(parse_count):
    """A metric value protobuf rejects: MLflow goes on with what parsed until then, and a schema
    check then decides; the second parse must end the same way."""
    import mlflow.server.handlers as handlers
    from mlflow.protos.service_pb2 import LogBatch

    body = {**BODY, "metrics": [{"key": "ok", "value": 1.0, "timestamp": TS}, {"key": "bad", "value": "abc", "timestamp": TS}]}
    schema = {"run_id": [handlers._assert_required, handlers._assert_string], "metrics": [handlers._assert_array]}

    def outcome(**kw):
        try:
            return handlers._get_request_message(LogBatch(), **kw), None
        except MlflowException as exc:
            return None, exc.message

    with request_context(json=body):
        ours = [outcome(), outcome(), outcome(schema=schema)]
    assert parse_count == ["LogBatch"]
    from mlflow.utils.proto_json_utils import parse_dict

    saved, handlers.parse_dict = handlers.parse_dict, parse_dict
    try:
        with request_context(json=body):
            mlflows = [outcome(), outcome(), outcome(schema=schema)]
    finally:
        handlers.parse_dict = saved
    assert ours == mlflows
    partial = ours[0][0]
    assert [m.key for m in partial.metrics] == ["ok", "bad"] and not partial.metrics[1].HasField("value")


def test_query_strings_and_filled_messages_are_parsed_as_before(parse_count):
    import mlflow.server.handlers as handlers
    from mlflow.protos.service_pb2 import GetRun, LogBatch

    args = {"run_id": "a" * 32}
    expected, _ = unpatched(args, GetRun, method="GET")
    with request_context("GET", query_string=args):
        assert handlers._get_request_message(GetRun()) == handlers._get_request_message(GetRun()) == expected
    assert parse_count == ["GetRun", "GetRun"]
    with request_context(json=BODY):
        filled = LogBatch(run_id="x")
        handlers._get_request_message(filled)
        handlers._get_request_message(LogBatch(run_id="y"))
    assert parse_count[2:] == ["LogBatch", "LogBatch"]
