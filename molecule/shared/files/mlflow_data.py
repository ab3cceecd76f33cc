#!/usr/bin/env python3
"""Load a realistic data set into an MLflow server, and export everything it holds, for the
upgrade tests (molecule/upgrade: a hand-made MLflow 2.22 deployment adopted by the playbooks;
molecule/mlflow_server: this project's previous default version upgraded to the pin).

  mlflow_data.py load   --uri URL [--runs 200] [--steps 50] [--logged-models] [--users]
  mlflow_data.py export --uri URL --out FILE [--users alice,bob] [--scope all|loaded]
  mlflow_data.py compare A.json B.json

Credentials come from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (basic-auth); S3
from the usual AWS_* variables and MLFLOW_S3_ENDPOINT_URL (a 2.x server with an s3:// artifact
root has its clients write to S3 directly).

The export is the whole content, not counts: every experiment (all lifecycle stages) with its
tags; every run's info, params, tags and the full history of every metric; every artifact's path,
size and SHA-256; registered models with descriptions, tags, aliases and every version; logged
models (3.x servers); the named users with their admin flag and every permission, and whether
their password still logs in. Values that only the server's version changes (field order) are
normalized by sorting; nothing is dropped.
"""

import argparse
import base64
import concurrent.futures
import hashlib
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

EXPERIMENTS = {  # the seeds' three examples, and a sweep
    "house-prices": {"team": "pricing", "dataset": "kaggle-house-prices"},
    "wine-quality": {"team": "oenology", "dataset": "uci-wine-quality"},
    "iris": {"team": "tutorial", "dataset": "iris"},
    "sweeps": {"team": "platform", "purpose": "hyper-parameter sweep"},
}
MODELS = {"house-price-regressor": "house-prices", "wine-classifier": "wine-quality", "iris-classifier": "iris"}
USERS = {"alice": "Alice-pa55word-2026", "bob": "Bob-pa55word-2026!"}
BASE_MS = 1_767_225_600_000  # 2026-01-01, so the data is the same on every run


def client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def rest(uri, method, path, body=None, user=None, password=None):
    user = user or os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
    req = urllib.request.Request(uri.rstrip("/") + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if user:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"{}")


def load_run(c, exp_id, exp_name, i, steps, artifacts_dir):
    from mlflow.entities import Metric, Param, RunTag

    start = BASE_MS + i * 60_000
    run = c.create_run(exp_id, start_time=start, run_name=f"{exp_name}-{i:03d}",
                       tags={"stage": "train" if i % 3 else "tune", "seed": str(i)})
    rid = run.info.run_id
    params = [Param("alpha", str(0.01 * (i % 7 + 1))), Param("max_depth", str(3 + i % 5)),
              Param("n_estimators", str(50 * (1 + i % 4))), Param("features", "area,rooms,age,location"),
              Param("dataset", EXPERIMENTS[exp_name].get("dataset", "synthetic"))]
    metrics = []
    for step in range(steps):
        ts = start + 1000 * step
        metrics.append(Metric("loss", round(1.0 / (1 + step + i % 5), 6), ts, step))
        metrics.append(Metric("rmse", round(50_000 / (1 + step) + i, 3), ts, step))
    metrics.append(Metric("r2", round(0.5 + (i % 50) / 100, 4), start + 1000 * steps, 0))
    c.log_batch(rid, metrics=metrics, params=params, tags=[RunTag("mlflow.note.content", f"run {i} of {exp_name}")])
    if (i // len(EXPERIMENTS)) % 5 == 0:  # 1 run in 5 of each experiment
        c.log_artifact(rid, str(artifacts_dir / "report.txt"))
        c.log_artifacts(rid, str(artifacts_dir / "model"), artifact_path="model")
    c.set_terminated(rid, status="FINISHED" if i % 17 else "FAILED", end_time=start + 1000 * steps + 500)
    return exp_name, i, rid


def load(args):
    c = client(args.uri)
    work = Path(tempfile.mkdtemp())
    (work / "report.txt").write_text("evaluation report\n" + "\n".join(f"fold {k}: 0.{k}9" for k in range(10)) + "\n")
    (work / "model").mkdir()
    (work / "model" / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n")
    (work / "model" / "model.pkl").write_bytes(hashlib.sha256(b"weights").digest() * 4096)  # 128 KiB
    exp_ids = {}
    for name, tags in EXPERIMENTS.items():
        found = c.get_experiment_by_name(name)
        exp_ids[name] = found.experiment_id if found else c.create_experiment(name, tags=tags)
    jobs = [(exp_ids[name], name, i) for i in range(args.runs) for name in [list(EXPERIMENTS)[i % len(EXPERIMENTS)]]]
    t0 = time.monotonic()
    runs = {}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for name, i, rid in pool.map(lambda j: load_run(c, *j, args.steps, work), jobs):
            runs[(name, i)] = rid
    loaded = time.monotonic() - t0
    for model, exp_name in MODELS.items():
        c.create_registered_model(model, tags={"owner": EXPERIMENTS[exp_name]["team"]},
                                  description=f"{model}: trained on {exp_name}")
        sources = sorted(i for (name, i) in runs if name == exp_name and (i // len(EXPERIMENTS)) % 5 == 0)[:2]
        for n, i in enumerate(sources, start=1):
            rid = runs[(exp_name, i)]
            c.create_model_version(model, f"runs:/{rid}/model", run_id=rid, tags={"validated": str(n == 1).lower()},
                                   description=f"version from run {i}")
        c.set_registered_model_alias(model, "champion", "1")
        c.set_registered_model_alias(model, "challenger", str(len(sources)))
    deleted = runs[(list(EXPERIMENTS)[1], 1)] if args.delete_one else None
    if deleted:
        c.delete_run(deleted)
    if args.logged_models:
        for name in MODELS:
            exp_id = exp_ids[MODELS[name]]
            model = c.create_logged_model(exp_id, name=f"{name}-lm", params={"framework": "sklearn"},
                                          tags={"origin": "upgrade-test"})
            c.finalize_logged_model(model.model_id, "READY")
    if args.users:
        for user, password in USERS.items():
            rest(args.uri, "POST", "/api/2.0/mlflow/users/create", {"username": user, "password": password})
        grants = [("alice", "experiment", exp_ids["house-prices"], "READ"),
                  ("bob", "experiment", exp_ids["wine-quality"], "EDIT"),
                  ("alice", "registered_model", "iris-classifier", "MANAGE")]
        for user, kind, resource, permission in grants:
            rest(args.uri, "POST", "/api/3.0/mlflow/users/permissions/grant",
                 {"username": user, "resource_type": kind, "resource_id": resource, "permission": permission})
    print(json.dumps({"experiments": len(exp_ids), "runs": len(runs), "deleted": deleted, "models": len(MODELS),
                      "seconds": round(loaded, 1)}))


def artifacts(repo, path=None):
    """Every file under a run's artifact root, read through its artifact repository (s3:// straight
    from S3, mlflow-artifacts:/ through the server), as the users' clients read it."""
    out = []
    for item in repo.list_artifacts(path):
        if item.is_dir:
            out.extend(artifacts(repo, item.path))
        else:
            local = repo.download_artifacts(item.path, tempfile.mkdtemp())
            out.append({"path": item.path, "size": item.file_size, "sha256": hashlib.sha256(Path(local).read_bytes()).hexdigest()})
    return out


def export_run(c, run):
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    info = run.info
    history = {}
    for key in sorted(run.data.metrics):
        points = c.get_metric_history(info.run_id, key)
        history[key] = sorted([m.step, m.timestamp, m.value] for m in points)
    return {
        "run_id": info.run_id, "run_name": info.run_name, "experiment_id": info.experiment_id, "user_id": info.user_id,
        "status": info.status, "start_time": info.start_time, "end_time": info.end_time,
        "lifecycle_stage": info.lifecycle_stage, "artifact_uri": info.artifact_uri,
        "params": dict(sorted(run.data.params.items())), "tags": dict(sorted(run.data.tags.items())),
        "latest_metrics": dict(sorted(run.data.metrics.items())), "metric_history": history,
        "datasets": sorted(json.dumps(d.to_dictionary(), sort_keys=True) for d in (run.inputs.dataset_inputs if run.inputs else [])),
        "artifacts": artifacts(get_artifact_repository(info.artifact_uri)),
    }


def export(args):
    from mlflow.entities import ViewType

    import mlflow

    mlflow.set_tracking_uri(args.uri)  # mlflow-artifacts:/ URIs resolve against it
    c = client(args.uri)
    t0 = time.monotonic()
    data = {"experiments": [], "runs": [], "registered_models": [], "logged_models": None, "users": {}}
    exps = sorted(c.search_experiments(view_type=ViewType.ALL), key=lambda e: int(e.experiment_id))
    if args.scope == "loaded":  # what `load` wrote, not what other tests add on the same server
        exps = [e for e in exps if e.name in EXPERIMENTS]
    for e in exps:
        data["experiments"].append({"experiment_id": e.experiment_id, "name": e.name, "artifact_location": e.artifact_location,
                                    "lifecycle_stage": e.lifecycle_stage, "tags": dict(sorted(e.tags.items())),
                                    "creation_time": e.creation_time, "last_update_time": e.last_update_time})
    runs = []
    for e in exps:
        token = None
        while True:
            page = c.search_runs([e.experiment_id], run_view_type=ViewType.ALL, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        data["runs"] = sorted(pool.map(lambda r: export_run(c, r), runs), key=lambda r: r["run_id"])
    models = c.search_registered_models(max_results=1000)
    for m in sorted((m for m in models if args.scope == "all" or m.name in MODELS), key=lambda m: m.name):
        versions = sorted(c.search_model_versions(f"name = '{m.name}'"), key=lambda v: int(v.version))
        data["registered_models"].append({
            "name": m.name, "description": m.description, "tags": dict(sorted(m.tags.items())),
            "aliases": dict(sorted(m.aliases.items())) if isinstance(m.aliases, dict) else sorted(m.aliases),
            "creation_timestamp": m.creation_timestamp, "last_updated_timestamp": m.last_updated_timestamp,
            "versions": [{"version": v.version, "source": v.source, "run_id": v.run_id, "status": v.status,
                          "description": v.description, "tags": dict(sorted(v.tags.items())),
                          "aliases": sorted(v.aliases), "current_stage": v.current_stage,
                          "creation_timestamp": v.creation_timestamp} for v in versions]})
    try:
        logged = c.search_logged_models(experiment_ids=[e.experiment_id for e in exps], max_results=1000)
    except Exception as exc:  # a 2.x server has no logged models (404): none to lose
        if "404" not in str(exc):
            raise
        data["logged_models"] = []
    else:
        data["logged_models"] = sorted(({"model_id": m.model_id, "name": m.name, "experiment_id": m.experiment_id,
                                         "status": str(m.status), "tags": dict(sorted(m.tags.items())),
                                         "params": dict(sorted(m.params.items())), "source_run_id": m.source_run_id,
                                         "artifact_location": m.artifact_location,
                                         "creation_timestamp": m.creation_timestamp} for m in logged),
                                       key=lambda m: m["model_id"])
    for user in [u for u in args.users.split(",") if u]:
        got = rest(args.uri, "GET", f"/api/2.0/mlflow/users/get?username={user}")["user"]
        try:
            rest(args.uri, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", user=user, password=USERS[user])
            logs_in = True
        except urllib.error.HTTPError:
            logs_in = False
        grants = rest(args.uri, "GET", f"/api/3.0/mlflow/users/permissions/list?username={user}").get("permissions", [])
        data["users"][user] = {"user": got, "logs_in": logs_in, "permissions": sorted(grants, key=lambda g: json.dumps(g, sort_keys=True))}
    Path(args.out).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    metric_points = sum(len(h) for r in data["runs"] for h in r["metric_history"].values())
    print(json.dumps({"experiments": len(data["experiments"]), "runs": len(data["runs"]), "metric_points": metric_points,
                      "artifacts": sum(len(r["artifacts"]) for r in data["runs"]),
                      "registered_models": len(data["registered_models"]),
                      "model_versions": sum(len(m["versions"]) for m in data["registered_models"]),
                      "logged_models": len(data["logged_models"]),
                      "users": len(data["users"]), "seconds": round(time.monotonic() - t0, 1)}))


def differences(a, b, path="$"):
    """Every place where two exports differ, as JSON paths."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in {'second' if key not in a else 'first'}")
            else:
                out.extend(differences(a[key], b[key], f"{path}.{key}"))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items against {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def compare(args):
    diffs = differences(json.loads(Path(args.a).read_text()), json.loads(Path(args.b).read_text()))
    print("\n".join(diffs[:50]) or "identical")
    return 1 if diffs else 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    ld = sub.add_parser("load")
    ld.add_argument("--uri", required=True)
    ld.add_argument("--runs", type=int, default=200)
    ld.add_argument("--steps", type=int, default=50)
    ld.add_argument("--logged-models", action="store_true")
    ld.add_argument("--users", action="store_true")
    ld.add_argument("--delete-one", action="store_true", help="delete one run (its lifecycle stage is data too)")
    ex = sub.add_parser("export")
    ex.add_argument("--uri", required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("--users", default="")
    ex.add_argument("--scope", choices=("all", "loaded"), default="all",
                    help="everything the server holds, or only the experiments and models `load` makes")
    cp = sub.add_parser("compare")
    cp.add_argument("a")
    cp.add_argument("b")
    args = parser.parse_args()
    return {"load": load, "export": export, "compare": compare}[args.command](args) or 0


if __name__ == "__main__":
    sys.exit(main())
