#!/usr/bin/env python3
"""Issue 10's benchmark: the deployed front door against the seeds' command and the in-process
SqlAlchemyStore, in one run, against the same host and the same PostgreSQL server.

Needs the stack of bench/molecule/bench (`make bench` converges it, runs this, destroys it).
Every client is a process forked from this one (the MLflow client holds the GIL for most of a
request: threads would measure the client). Nothing MLflow-related runs in this parent process,
so no HTTP session or database engine is shared across a fork.

Writes bench/results/<UTC date-time>.json and .md and a throughput-vs-clients PNG.
Every measurement carries its load context: /proc/loadavg before and after, the number of
running containers on the machine, and the CPU seconds each component used during it
(per-process utime+stime read from the host's /proc, attributed by container and unit).
"""

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STATE = Path(os.environ.get("BENCH_STATE_DIR", HERE / ".state"))
RESULTS = HERE / "results"
TICK = os.sysconf("SC_CLK_TCK")
FORK = mp.get_context("fork")
GATE_SECONDS = FORK.Value("d", 0.0)  # set before each fork: how long a measurement lasts

CONFIGS = ("deployed", "seed", "inproc")
LABELS = {
    "deployed": "deployed (nginx TLS + basic-auth, defaults)",
    "seed": "seeds' command (plain HTTP, no auth)",
    "inproc": "in-process SqlAlchemyStore",
}


# --------------------------------------------------------------------------- the stack
def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def container_ip(name):
    return docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)


def container_id(name):
    return docker("inspect", "-f", "{{.Id}}", name)


def load_stack():
    secrets = STATE / "secrets"
    read = lambda name: (secrets / name).read_text().split()[0]  # noqa: E731 (lookup('password') files)
    stack = json.loads((STATE / "stack.json").read_text())
    host, pg, moto = container_ip("bench-host"), container_ip("bench-pg"), container_ip("bench-moto")
    db_pw = read("db")
    db = lambda name: f"postgresql+psycopg2://mlflow:{db_pw}@{pg}:5432/{name}?sslmode=require"  # noqa: E731
    s3_env = {
        "MLFLOW_S3_ENDPOINT_URL": f"http://{moto}:5000",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return {
        "stack": stack,
        "ids": {name: container_id(name) for name in ("bench-host", "bench-pg", "bench-moto")},
        "ip": {"host": host, "pg": pg, "moto": moto},
        "db_uri": {"deployed": db("mlflow"), "seed": db("bench_seed"), "inproc": db("bench_inproc")},
        "s3_env": s3_env,
        "cfg": {
            "deployed": {
                "uri": f"https://{host}",
                "env": {
                    "MLFLOW_TRACKING_USERNAME": "bench",
                    "MLFLOW_TRACKING_PASSWORD": read("user"),
                    "MLFLOW_TRACKING_SERVER_CERT_PATH": str(STATE / "front-door-ca.crt"),
                    # With an S3 destination the server advertises multipart downloads: the client would
                    # fetch presigned S3 URLs (the server's S3 endpoint) and bypass the front door.
                    # The benchmark measures the proxied path, so it turns that off (see README).
                    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
                    # The same for uploads from 500 MB up (MLflow's multipart threshold): presigned part URLs.
                    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false",
                },
            },
            "seed": {"uri": f"http://{host}:{stack['seed_port']}", "env": dict(s3_env)},
            "inproc": {"uri": db("bench_inproc"), "env": dict(s3_env)},
        },
    }


# --------------------------------------------------------------------------- load context
def load_context():
    running = docker("ps", "-q").split()
    return {"loadavg": Path("/proc/loadavg").read_text().split()[:3], "containers_running": len(running)}


# The host's units, by their systemd cgroup, and the names the tables use.
UNITS = (("mlflow.service", "mlflow (deployed)"), ("bench-seed.service", "mlflow (seeds' command)"),
         ("nginx.service", "nginx"))


def processes(*files):
    """(cgroup v2 line, {file: text}) of every live process, with the named /proc/PID files."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cg = Path(f"/proc/{entry.name}/cgroup").read_text()
            texts = {f: Path(f"/proc/{entry.name}/{f}").read_bytes().decode(errors="replace") for f in files}
        except OSError:
            continue
        yield next((x for x in cg.splitlines() if x.startswith("0::")), ""), texts


def unit_of(cgroup_line):
    return next((name for unit, name in UNITS if unit in cgroup_line), None)


def component_cpu(ids):
    """CPU seconds (utime+stime) of every live process, summed per component."""
    host_id, pg_id, moto_id = ids["bench-host"], ids["bench-pg"], ids["bench-moto"]
    out = {}
    for line, texts in processes("stat", "cmdline"):
        fields = texts["stat"].rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK
        if host_id in line:
            name = unit_of(line) or "host other"
        elif pg_id in line:
            parts = texts["cmdline"].replace("\0", " ").split()
            # "postgres: 15/main: USER DATABASE ADDRESS(PORT) STATE"
            if len(parts) >= 4 and parts[0] == "postgres:" and parts[2] == "mlflow":
                name = f"postgres backend {parts[3]}"
            else:
                name = "postgres other"
        elif moto_id in line:
            name = "moto (S3)"
        else:
            continue
        out[name] = out.get(name, 0.0) + cpu
    return out


def cpu_delta(before, after):
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in sorted(set(before) | set(after))
            if after.get(k, 0.0) - before.get(k, 0.0) >= 0.01}


def rss_by_unit(host_id):
    """Resident memory (MiB) of the deployed service, nginx and the seeds' command."""
    out = {}
    for line, texts in processes("status"):
        name = unit_of(line) if host_id in line else None
        if name:
            kb = next((int(x.split()[1]) for x in texts["status"].splitlines() if x.startswith("VmRSS:")), 0)
            out.setdefault(name, {"rss_mib": 0.0, "processes": 0})
            out[name]["rss_mib"] += kb / 1024
            out[name]["processes"] += 1
    return {k: {"rss_mib": round(v["rss_mib"], 1), "processes": v["processes"]} for k, v in out.items()}


class RssSampler(threading.Thread):
    def __init__(self, host_id, every=1.0):
        super().__init__(daemon=True)
        self.host_id, self.every, self.peak, self.stop = host_id, every, {}, threading.Event()

    def run(self):
        while not self.stop.is_set():
            for name, v in rss_by_unit(self.host_id).items():
                if v["rss_mib"] > self.peak.get(name, {}).get("rss_mib", 0):
                    self.peak[name] = v
            self.stop.wait(self.every)


# --------------------------------------------------------------------------- clients (children)
def client_for(cfg, timeout=60):
    """Runs in a child only."""
    os.environ.update(cfg["env"])
    os.environ["MLFLOW_TRACKING_URI"] = cfg["uri"]  # artifact repositories resolve mlflow-artifacts:/ with it
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # an error is counted, not retried away
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
    import logging
    from mlflow import MlflowClient
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "View run" line per run (after mlflow's own setup)
    return MlflowClient(tracking_uri=cfg["uri"])


def batch_metrics():
    from mlflow.entities import Metric
    now = int(time.time() * 1000)
    return [Metric(f"m{k}", random.random(), now, step) for k in range(100) for step in range(10)]


def wait_start(gate, ready):
    ready.put(1)
    while gate.value == 0:
        time.sleep(0.005)
    return gate.value, gate.value + GATE_SECONDS.value


def hold(gate):
    """Keep this client (and its database connections) alive until the parent has read the CPU
    counters: an in-process client's PostgreSQL backends exit with it."""
    while gate.value > 0:
        time.sleep(0.01)


def worker(cfg, mode, exp_id, gate, ready, queue):
    lat, errors, err_sample, units = [], 0, "", 0
    try:
        client = client_for(cfg)
        metrics = batch_metrics()
        run_id = client.create_run(exp_id).info.run_id if mode == "loop" else None
        step = 0
        t_start, t_end = wait_start(gate, ready)
        while time.time() < t_end:
            t0 = time.perf_counter()
            try:
                if mode == "batch":
                    rid = client.create_run(exp_id).info.run_id
                    client.log_batch(rid, metrics=metrics)
                    client.set_terminated(rid)
                else:
                    client.log_metric(run_id, "loss", random.random(), step=step)
                    step += 1
                lat.append((time.time(), time.perf_counter() - t0))
                units += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors += 1
                err_sample = err_sample or f"{type(exc).__name__}: {str(exc)[:200]}"
                time.sleep(0.05)
        if run_id:
            client.set_terminated(run_id)
    except Exception as exc:  # noqa: BLE001
        errors += 1
        err_sample = err_sample or f"setup {type(exc).__name__}: {str(exc)[:200]}"
        ready.put(1)
    queue.put({"lat": lat, "errors": errors, "err": err_sample, "units": units})
    hold(gate)


def reader(cfg, mode, exp_id, run_ids, gate, ready, queue):
    lat, errors, err_sample = [], 0, ""
    try:
        client = client_for(cfg)
        t_start, t_end = wait_start(gate, ready)
        while time.time() < t_end:
            t0 = time.perf_counter()
            try:
                if mode == "search":
                    client.search_runs([exp_id], filter_string="params.family = 'f3' and metrics.m0 > 0.5",
                                       order_by=["metrics.m1 DESC"], max_results=100)
                else:
                    client.get_metric_history(random.choice(run_ids), "m7")
                lat.append((time.time(), time.perf_counter() - t0))
            except Exception as exc:  # noqa: BLE001
                errors += 1
                err_sample = err_sample or f"{type(exc).__name__}: {str(exc)[:200]}"
                time.sleep(0.05)
    except Exception as exc:  # noqa: BLE001
        errors += 1
        err_sample = f"setup {type(exc).__name__}: {str(exc)[:200]}"
        ready.put(1)
    queue.put({"lat": lat, "errors": errors, "err": err_sample, "units": len(lat)})
    hold(gate)


def in_child(fn, *args):
    """Run fn(*args) in a forked child and return its result (keeps the parent MLflow-free)."""
    queue = FORK.Queue()
    proc = FORK.Process(target=lambda: queue.put(_safe(fn, *args)))
    proc.start()
    result = queue.get()
    proc.join()
    if isinstance(result, dict) and "__error__" in result:
        raise RuntimeError(result["__error__"])
    return result


def _safe(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        import traceback
        return {"__error__": traceback.format_exc()}


def setup_experiment(cfg, name, artifact_location=None):
    client = client_for(cfg)
    exp = client.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


# --------------------------------------------------------------------------- measurements
def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def measure(env, name, target, args_for, clients, duration, extra=None, warmup=0.0):
    """Clients start together; the rate and the latencies count the operations that ended in
    [start + warmup, start + duration] (the warm-up lets slow operations reach a steady state)."""
    queue, ready, gate = FORK.Queue(), FORK.Queue(), FORK.Value("d", 0.0)
    GATE_SECONDS.value = duration
    rus0 = os.times()
    procs = [FORK.Process(target=target, args=(*args_for(i), gate, ready, queue)) for i in range(clients)]
    for p in procs:
        p.start()
    for _ in procs:  # every client has its client (and, for the loop, its run): start together
        ready.get(timeout=300)
    time.sleep(0.5)
    ctx0, cpu0 = load_context(), component_cpu(env["ids"])
    gate.value = time.time() + 0.2
    parts = [queue.get() for _ in procs]
    cpu1, ctx1 = component_cpu(env["ids"]), load_context()
    t_start = gate.value
    gate.value = -1.0  # release the clients
    for p in procs:
        p.join()
    rus1 = os.times()
    window = [(end, l) for part in parts for end, l in part["lat"] if t_start + warmup <= end <= t_start + duration]
    lat = [l for _, l in window]
    units = len(window)
    total = sum(part["units"] for part in parts)
    errors = sum(part["errors"] for part in parts)
    cpu = cpu_delta(cpu0, cpu1)
    cpu["bench clients"] = round((rus1.children_user + rus1.children_system) - (rus0.children_user + rus0.children_system), 2)
    row = {
        "name": name, "clients": clients, "seconds": duration, "ops": units, "ops_all": total, "warmup_s": warmup,
        "ops_per_s": round(units / (duration - warmup), 2),
        "p50_ms": round(pct(lat, 50) * 1000, 1) if lat else None,
        "p99_ms": round(pct(lat, 99) * 1000, 1) if lat else None,
        "errors": errors, "error_sample": next((p["err"] for p in parts if p["err"]), ""),
        "load_before": ctx0, "load_after": ctx1, "cpu_seconds": cpu,
    }
    row.update(extra or {})
    top = sorted(cpu.items(), key=lambda kv: -kv[1])[:4]
    print(json.dumps({k: row[k] for k in ("name", "clients", "ops_per_s", "ops", "p50_ms", "p99_ms", "errors")}), "cpu", top,
          "load", ctx0["loadavg"][0], "->", ctx1["loadavg"][0], "containers", ctx1["containers_running"], flush=True)
    return row


def fill_runs(uri, exp_id, start, count):
    """Runs for the read tests, written straight into a configuration's database (setup only)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    store = SqlAlchemyStore(uri, "s3://mlflow-artifacts/fill")
    now = int(time.time() * 1000)
    ids = []
    for i in range(start, start + count):
        run = store.create_run(exp_id, "bench", now, [], f"fill-{i}")
        rid = run.info.run_id
        metrics = [Metric(f"m{k}", random.random(), now, 0) for k in range(5)]
        metrics += [Metric("m7", random.random(), now + s, s) for s in range(50)]
        store.log_batch(rid, metrics=metrics, params=[Param("family", f"f{i % 10}"), Param("lr", str(random.random()))],
                        tags=[RunTag("team", f"t{i % 7}")])
        store.update_run_info(rid, 3, now, f"fill-{i}")  # 3 = FINISHED
        ids.append(rid)
    return ids


def multiply_runs(uri, exp_id, target):
    """Copies of the experiment's fill-* runs, inside the database (INSERT ... SELECT over every table
    keyed by run_uuid, new ids), until it holds at least target runs: 10,000 runs in seconds."""
    from sqlalchemy import create_engine, text
    engine = create_engine(uri)
    with engine.begin() as conn:
        base = conn.execute(text("select count(*) from runs where experiment_id = :e and name like 'fill-%'"),
                            {"e": int(exp_id)}).scalar()
        have = conn.execute(text("select count(*) from runs where experiment_id = :e"), {"e": int(exp_id)}).scalar()
        copies = -(-(target - have) // base) if target > have else 0
        if not copies:
            return have
        conn.execute(text("create temp table idmap as select r.run_uuid as old, g, md5(random()::text || clock_timestamp()::text "
                          "|| r.run_uuid || g::text) as new from runs r, generate_series(1, :k) g "
                          "where r.experiment_id = :e and r.name like 'fill-%'"), {"k": copies, "e": int(exp_id)})
        tables = [r[0] for r in conn.execute(text(
            "select table_name from information_schema.columns where column_name = 'run_uuid' and table_schema = 'public' "
            "and table_name <> 'runs' order by table_name"))]
        for table in ["runs"] + tables:
            cols = [r[0] for r in conn.execute(text(
                "select column_name from information_schema.columns where table_name = :t and table_schema = 'public' "
                "order by ordinal_position"), {"t": table})]
            sel = []
            for c in cols:
                if c == "run_uuid":
                    sel.append("m.new")
                elif table == "runs" and c == "name":
                    sel.append("t.name || '-c' || m.g")
                else:
                    sel.append(f't."{c}"')
            conn.execute(text(f'insert into {table} ({", ".join(chr(34) + c + chr(34) for c in cols)}) '
                              f'select {", ".join(sel)} from {table} t join idmap m on t.run_uuid = m.old'))
        conn.execute(text("analyze"))
        return conn.execute(text("select count(*) from runs where experiment_id = :e"), {"e": int(exp_id)}).scalar()


def count_runs(uri, exp_id):
    from sqlalchemy import create_engine, text
    engine = create_engine(uri)
    with engine.connect() as conn:
        return conn.execute(text("select count(*) from runs where experiment_id = :e"), {"e": int(exp_id)}).scalar()


def some_run_ids(uri, exp_id, n=200):
    from sqlalchemy import create_engine, text
    engine = create_engine(uri)
    with engine.connect() as conn:
        rows = conn.execute(text("select run_uuid from runs where experiment_id = :e and name like 'fill-%' limit :n"),
                            {"e": int(exp_id), "n": n}).all()
    return [r[0] for r in rows]


def prepare_reads(env, n_runs, procs_per_db=2, base_runs=250):
    """An experiment per configuration with n_runs runs (params, 5 single-step metrics, a 50-step
    history), written straight into the three databases at once (setup, not measured)."""
    exps, procs, queue = {}, [], FORK.Queue()
    for cfg_name in CONFIGS:
        exp_id = exps[cfg_name] = in_child(setup_experiment, env["cfg"][cfg_name], "bench-read")
        uri = env["db_uri"][cfg_name]
        have = in_child(count_runs, uri, exp_id)
        missing = max(0, min(n_runs, base_runs) - have)
        per = -(-missing // procs_per_db)
        for c in range(procs_per_db if missing else 0):
            procs.append(FORK.Process(target=lambda u=uri, e=exp_id, s=have + c * per: queue.put(_safe(fill_runs, u, e, s, per))))
    t0 = time.time()
    for p in procs:
        p.start()
    for _ in procs:
        res = queue.get()
        if isinstance(res, dict):
            raise RuntimeError(res["__error__"])
    for p in procs:
        p.join()
    out = {}
    for cfg_name in CONFIGS:
        uri = env["db_uri"][cfg_name]
        in_child(multiply_runs, uri, exps[cfg_name], n_runs)
        out[cfg_name] = {"experiment_id": exps[cfg_name], "runs": in_child(count_runs, uri, exps[cfg_name]),
                         "sample_run_ids": in_child(some_run_ids, uri, exps[cfg_name])}
        print(f"reads: {cfg_name} experiment {exps[cfg_name]} holds {out[cfg_name]['runs']} runs "
              f"(filled in {time.time() - t0:.0f} s)", flush=True)
    return out


# --------------------------------------------------------------------------- artifacts
def artifact_mlflow(cfg, exp_id, size, workdir):
    """Up and down through the configuration's tracking server; seconds each way. The server fetches
    the whole object from S3 before its first byte goes out: a long timeout."""
    client = client_for(cfg, timeout=1800)
    src = Path(workdir) / f"blob-{size}"
    rid = client.create_run(exp_id).info.run_id
    t0 = time.perf_counter()
    client.log_artifact(rid, str(src))
    up = time.perf_counter() - t0
    dst = Path(workdir) / f"down-{rid}"
    dst.mkdir()
    t0 = time.perf_counter()
    client.download_artifacts(rid, src.name, str(dst))
    down = time.perf_counter() - t0
    ok = (dst / src.name).stat().st_size == size
    (dst / src.name).unlink()
    dst.rmdir()
    return {"up_s": up, "down_s": down, "ok": ok, "artifact_uri": client.get_run(rid).info.artifact_uri}


def artifact_boto3(s3_env, size, workdir):
    """The same file straight to the same S3 endpoint with boto3 (its default transfer settings)."""
    import boto3
    s3 = boto3.client("s3", endpoint_url=s3_env["MLFLOW_S3_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    src = Path(workdir) / f"blob-{size}"
    key = f"direct/{time.time_ns()}/{src.name}"
    t0 = time.perf_counter()
    s3.upload_file(str(src), "mlflow-artifacts", key)
    up = time.perf_counter() - t0
    dst = Path(workdir) / f"direct-{time.time_ns()}"
    t0 = time.perf_counter()
    s3.download_file("mlflow-artifacts", key, str(dst))
    down = time.perf_counter() - t0
    ok = dst.stat().st_size == size
    dst.unlink()
    s3.delete_object(Bucket="mlflow-artifacts", Key=key)
    return {"up_s": up, "down_s": down, "ok": ok}


def measure_artifacts(env, sizes, repeats, exp_ids):
    rows = []
    workdir = tempfile.mkdtemp(prefix="bench-artifacts-", dir=os.environ.get("BENCH_TMP", "/var/tmp"))
    try:
        for size in sizes:
            blob = Path(workdir) / f"blob-{size}"
            with blob.open("wb") as f:
                left = size
                while left:
                    chunk = os.urandom(min(left, 1 << 20))
                    f.write(chunk)
                    left -= len(chunk)
            for rep in range(repeats):
                for how in ("deployed", "direct"):
                    ctx0, cpu0 = load_context(), component_cpu(env["ids"])
                    if how == "deployed":
                        res = in_child(artifact_mlflow, env["cfg"]["deployed"], exp_ids["deployed"], size, workdir)
                    else:
                        res = in_child(artifact_boto3, env["s3_env"], size, workdir)
                    cpu1, ctx1 = component_cpu(env["ids"]), load_context()
                    mib = size / (1 << 20)
                    row = {"path": how, "bytes": size, "repeat": rep, "ok": res["ok"],
                           "up_MBps": round(size / 1e6 / res["up_s"], 1), "down_MBps": round(size / 1e6 / res["down_s"], 1),
                           "up_s": round(res["up_s"], 2), "down_s": round(res["down_s"], 2),
                           "artifact_uri": res.get("artifact_uri", ""),
                           "load_before": ctx0, "load_after": ctx1, "cpu_seconds": cpu_delta(cpu0, cpu1)}
                    print(f"artifacts {how} {mib:.0f} MiB: up {row['up_MBps']} MB/s down {row['down_MBps']} MB/s ok={res['ok']}"
                          f" load {ctx0['loadavg'][0]}->{ctx1['loadavg'][0]}", flush=True)
                    rows.append(row)
            blob.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


# --------------------------------------------------------------------------- the UI
def prepare_ui(env, n_runs):
    """An experiment of n_runs finished runs per server (written straight into its database)."""
    out = {}
    for c in ("deployed", "seed"):
        exp_id = in_child(setup_experiment, env["cfg"][c], "bench-ui")
        uri = env["db_uri"][c]
        have = in_child(count_runs, uri, exp_id)
        if have < n_runs:
            in_child(fill_runs, uri, exp_id, have, n_runs - have)
        out[c] = {"experiment_id": exp_id, "runs": in_child(count_runs, uri, exp_id)}
    return out


def ui_page_load(cfg, exp_id, shot):
    """A real browser (Debian's chromium driven by Playwright) opens the experiment page in a fresh
    context (no cache, no cookies) and waits until the runs table shows run names: the seconds, with
    the number of responses the page had by then and their size on the wire (KiB)."""
    from playwright.sync_api import sync_playwright
    user, password = cfg["env"].get("MLFLOW_TRACKING_USERNAME"), cfg["env"].get("MLFLOW_TRACKING_PASSWORD")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("BENCH_CHROMIUM", "/usr/bin/chromium"),
                                    args=["--no-sandbox", "--disable-gpu"])
        ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1600, "height": 1000},
                                  http_credentials={"username": user, "password": password} if user else None)
        page = ctx.new_page()
        responses = []
        page.on("response", lambda resp: responses.append(resp))
        t0 = time.perf_counter()
        page.goto(f"{cfg['uri']}/#/experiments/{exp_id}/runs", wait_until="load", timeout=120_000)
        # The runs table: the names of the filled runs (fill-N), drawn once search_runs answered.
        page.get_by_text(re.compile(r"^fill-\d+$")).first.wait_for(state="visible", timeout=120_000)
        seconds = time.perf_counter() - t0
        done = list(responses)
        # Bytes on the wire (after compression), headers included.
        sizes = [r.request.sizes() for r in done]
        kib = round(sum(z["responseBodySize"] + z["responseHeadersSize"] for z in sizes) / 1024)
        if shot:
            page.screenshot(path=shot)
        browser.close()
    return {"seconds": seconds, "responses": len(done), "kib": kib}


def measure_ui(env, setup, repeats, stem):
    rows = []
    for rep in range(repeats):  # alternate, so a load change hits both servers alike
        for c in ("deployed", "seed"):
            ctx0, cpu0 = load_context(), component_cpu(env["ids"])
            shot = str(RESULTS / f"{stem}-ui-{c}.png") if rep == 0 else ""
            res = in_child(ui_page_load, env["cfg"][c], setup[c]["experiment_id"], shot)
            cpu1, ctx1 = component_cpu(env["ids"]), load_context()
            row = {"name": c, "repeat": rep, "seconds": round(res["seconds"], 2), "responses": res["responses"],
                   "kib": res["kib"], "runs": setup[c]["runs"],
                   "load_before": ctx0, "load_after": ctx1, "cpu_seconds": cpu_delta(cpu0, cpu1)}
            print(f"ui {c}: {row['seconds']} s, {row['responses']} responses, load {ctx0['loadavg'][0]}", flush=True)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- report
def summarize(result):
    lines = []
    w = result["writes"]
    at = lambda rows, name, n: next((r for r in rows if r["name"] == name and r["clients"] == n), None)  # noqa: E731

    def fmt(v, unit=""):
        return "-" if v is None else f"{v:,.1f}{unit}" if isinstance(v, float) else f"{v:,}{unit}"

    def load(r):
        return f"{r['load_before']['loadavg'][0]}→{r['load_after']['loadavg'][0]} / {r['load_after']['containers_running']}"

    if w.get("batch"):
        lines += ["### 1. Writes: create_run + log_batch (100 metrics × 10 steps) + set_terminated", "",
                  "| clients | configuration | runs/s | metrics/s | p50 ms | p99 ms | errors | load 1-min before→after / containers |",
                  "|---:|---|---:|---:|---:|---:|---:|---|"]
        for r in w["batch"]:
            lines.append(f"| {r['clients']} | {r['name']} | {fmt(r['ops_per_s'])} | {fmt(r['ops_per_s'] * 1000)} | {fmt(r['p50_ms'])} "
                         f"| {fmt(r['p99_ms'])} | {r['errors']} | {load(r)} |")
        lines += ["", "Ratios in the same run (deployed ÷ baseline):", "",
                  "| clients | runs/s vs seeds' | runs/s vs in-process | p99 vs seeds' |", "|---:|---:|---:|---:|"]
        for n in sorted({r["clients"] for r in w["batch"]}):
            d, s, i = at(w["batch"], "deployed", n), at(w["batch"], "seed", n), at(w["batch"], "inproc", n)
            if d and s and i and s["ops_per_s"] and i["ops_per_s"] and s["p99_ms"]:
                lines.append(f"| {n} | {d['ops_per_s'] / s['ops_per_s']:.2f}× | {d['ops_per_s'] / i['ops_per_s']:.0%} "
                             f"| {d['p99_ms'] / s['p99_ms']:.2f}× |")
    def calls_table(title, first, key, rate, rows):
        out = ["", title, "", f"| {first} | configuration | {rate} | p50 ms | p99 ms | errors | load before→after / containers |",
               "|" + ("---:" if key == "clients" else "---") + "|---|---:|---:|---:|---:|---|"]
        return out + [f"| {r[key]} | {r['name']} | {fmt(r['ops_per_s'])} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} "
                      f"| {r['errors']} | {load(r)} |" for r in rows]

    if w.get("loop"):
        lines += calls_table("### 1b. Writes: log_metric per step in a loop (one call per metric)", "clients", "clients",
                             "calls/s (= metrics/s)", w["loop"])
    if result.get("reads"):
        lines += calls_table(f"### 2. Reads ({result['reads_setup']['clients']} clients; experiment sizes: "
                             + ", ".join(f"{k} {v['runs']:,} runs" for k, v in result["reads_setup"]["experiments"].items())
                             + ")", "call", "call", "calls/s", result["reads"])
    if result.get("artifacts"):
        lines += ["", "### 3. Artifacts: one file up then down, one client", "",
                  "| size | path | up MB/s | down MB/s | load before→after / containers |", "|---:|---|---:|---:|---|"]
        for r in result["artifacts"]:
            lines.append(f"| {r['bytes'] / (1 << 20):,.0f} MiB | {r['path']} | {r['up_MBps']} | {r['down_MBps']} | {load(r)} |")
        for size in sorted({r["bytes"] for r in result["artifacts"]}):
            dep = [r for r in result["artifacts"] if r["bytes"] == size and r["path"] == "deployed"]
            dire = [r for r in result["artifacts"] if r["bytes"] == size and r["path"] == "direct"]
            if dep and dire:
                mu = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
                lines.append(f"\n{size / (1 << 20):,.0f} MiB, front door ÷ direct S3 (medians): up "
                             f"{mu(dep, 'up_MBps') / mu(dire, 'up_MBps'):.0%}, down {mu(dep, 'down_MBps') / mu(dire, 'down_MBps'):.0%}")
    if result.get("ui"):
        lines += ["", f"### 4. The UI: a real browser opens an experiment page of {result['ui'][0]['runs']:,} runs "
                  "(fresh context each time) until the runs table shows", "",
                  "| configuration | median s | min s | max s | responses | KiB on the wire | tries |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name in ("deployed", "seed"):
            rows = [r for r in result["ui"] if r["name"] == name]
            if rows:
                sec = [r["seconds"] for r in rows]
                lines.append(f"| {name} | {statistics.median(sec):.2f} | {min(sec):.2f} | {max(sec):.2f} "
                             f"| {rows[0]['responses']} | {rows[0]['kib']:,} | {len(rows)} |")
        d = [r["seconds"] for r in result["ui"] if r["name"] == "deployed"]
        s_ = [r["seconds"] for r in result["ui"] if r["name"] == "seed"]
        if d and s_:
            lines.append(f"\nUI page, front door ÷ plain server (medians): {statistics.median(d) / statistics.median(s_):.2f}×")
    if result.get("memory"):
        m = result["memory"]
        lines += ["", "### 6. Memory (RSS, MiB, summed over the unit's processes)", "",
                  "| unit | idle | peak under 32-client writes to the deployed server |", "|---|---:|---:|"]
        for name in sorted(set(m["idle"]) | set(m["peak_32"])):
            i, p = m["idle"].get(name, {}), m["peak_32"].get(name, {})
            lines.append(f"| {name} ({i.get('processes', '?')} processes) | {fmt(i.get('rss_mib'))} | {fmt(p.get('rss_mib'))} |")
    return "\n".join(lines) + "\n"


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, ylabel in ((axes[0], "batch", "metrics/s (log_batch of 1,000)"), (axes[1], "loop", "log_metric calls/s")):
        rows = result["writes"].get(key) or []
        for name in CONFIGS:
            pts = sorted((r["clients"], r["ops_per_s"] * (1000 if key == "batch" else 1)) for r in rows if r["name"] == name)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=LABELS[name])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("clients")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"MLflow write throughput vs clients, one run {result['started']} (2 cores shared with clients)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def save(result, stem):
    """After each section, so an interrupted run keeps what it measured."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")


# --------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,4,16,32")
    ap.add_argument("--seconds", type=float, default=30, help="per write measurement (log_batch)")
    ap.add_argument("--warmup", type=float, default=8, help="first seconds of a log_batch measurement not counted")
    ap.add_argument("--loop-seconds", type=float, default=10)
    ap.add_argument("--read-runs", type=int, default=10000)
    ap.add_argument("--read-clients", type=int, default=4)
    ap.add_argument("--read-seconds", type=float, default=10)
    ap.add_argument("--artifacts", default="10M", help="sizes, e.g. 10M,1G; empty: skip")
    ap.add_argument("--artifact-repeats", type=int, default=3)
    ap.add_argument("--ui-runs", type=int, default=1000)
    ap.add_argument("--ui-repeats", type=int, default=5)
    ap.add_argument("--sections", default="writes,loop,reads,memory,artifacts,ui")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    counts = [int(x) for x in args.clients.split(",")]

    env = load_stack()
    # Imported once here, so each forked client does not pay (and count) the import: no client,
    # session or engine is made in this process.
    import mlflow  # noqa: F401
    started = dt.datetime.now(dt.timezone.utc)
    result = {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "mlflow_version": "the role's pin (roles/mlflow_server/defaults/main.yml at the commit above)",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "configurations": LABELS,
        "deployed_workers": env["stack"].get("workers"),
        "args": vars(args),
        "load_at_start": load_context(),
        "writes": {},
    }
    stem = started.strftime("%Y-%m-%dT%H%MZ") + (f"-{args.tag}" if args.tag else "")
    exp = {c: in_child(setup_experiment, env["cfg"][c], "bench-write") for c in CONFIGS}
    host_id = env["ids"]["bench-host"]

    if "memory" in sections:
        time.sleep(3)
        result["memory"] = {"idle": rss_by_unit(host_id), "idle_load": load_context()}

    if "writes" in sections:
        rows = []
        for n in counts:
            for c in CONFIGS:
                sampler = None
                if n == max(counts) and c == "deployed" and "memory" in sections:
                    sampler = RssSampler(host_id)
                    sampler.start()
                rows.append(measure(env, c, worker, lambda i, c=c: (env["cfg"][c], "batch", exp[c]), n, args.seconds,
                                   warmup=args.warmup))
                if sampler:
                    sampler.stop.set()
                    sampler.join()
                    result["memory"]["peak_32"] = sampler.peak
                    result["memory"]["peak_clients"] = n
        result["writes"]["batch"] = rows
        save(result, stem)
    if "loop" in sections:
        rows = []
        for n in counts:
            for c in CONFIGS:
                rows.append(measure(env, c, worker, lambda i, c=c: (env["cfg"][c], "loop", exp[c]), n, args.loop_seconds,
                                   warmup=2.0))
        result["writes"]["loop"] = rows
        save(result, stem)
    if "reads" in sections:
        setup = prepare_reads(env, args.read_runs)
        result["reads_setup"] = {"clients": args.read_clients, "experiments": {k: {"runs": v["runs"]} for k, v in setup.items()},
                                 "filter": "params.family = 'f3' and metrics.m0 > 0.5", "order_by": "metrics.m1 DESC",
                                 "max_results": 100, "history": "m7, 50 steps"}
        rows = []
        for call in ("search", "history"):
            for c in CONFIGS:
                s = setup[c]
                rows.append(measure(env, c, reader, lambda i, c=c, s=s, call=call: (env["cfg"][c], call, s["experiment_id"],
                                                                                    s["sample_run_ids"]),
                                    args.read_clients, args.read_seconds,
                                    {"call": "search_runs" if call == "search" else "get_metric_history"}, warmup=1.0))
        result["reads"] = rows
        save(result, stem)
    if "artifacts" in sections and args.artifacts:
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        sizes = [int(s[:-1]) * units[s[-1]] for s in args.artifacts.split(",")]
        art_exp = {"deployed": in_child(setup_experiment, env["cfg"]["deployed"], "bench-artifacts")}
        result["artifacts"] = measure_artifacts(env, sizes, args.artifact_repeats, art_exp)

    if "ui" in sections:
        setup = prepare_ui(env, args.ui_runs)
        result["ui"] = measure_ui(env, setup, args.ui_repeats, stem)
        save(result, stem)

    result["load_at_end"] = load_context()
    save(result, stem)
    table = summarize(result)
    header = (f"# Benchmark {result['started']} (commit {result['commit'][:10]})\n\n"
              f"{os.cpu_count()} CPUs shared by the stack, the clients and other engineers' scenarios; "
              f"load at start {result['load_at_start']['loadavg']} with {result['load_at_start']['containers_running']} "
              f"containers running. Deployed workers: {result['deployed_workers']}.\n\n")
    (RESULTS / f"{stem}.md").write_text(header + table)
    if result["writes"]:
        plot(result, RESULTS / f"{stem}.png")
    print(header + table)


if __name__ == "__main__":
    main()
