"""Fault drills (issue 11): a part of the deployment fails, users keep working where they can,
get a clear error where they cannot, and everything heals without anyone running Ansible.

Runs after test_e2e (whose stop/start test is the reboot drill) and the idempotence step.
The drills go from the least to the most disruptive: S3 down, a full upload spool, PostgreSQL
restarted under load, the server killed. Each restores what it broke in a finally block, so
a failing drill does not fail the next ones. Measurements are printed (pytest -s) and
recorded in README.md, "Faults".

The spool drill enters the MLflow unit's mount namespace from this machine (nsenter on the
process's PID here; root, and docker on this machine): the unit's /tmp and /var/tmp are
private (PrivateTmp=), and the EC2 stand-in's root may not look into another user's process.
"""

import json
import os
import re
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import CLIENT_PRELUDE, HOST, VENV_BIN, aws, front_door_status, mlflow_client, on_host

DB = "e2e-db"
MOTO = "e2e-moto"
UNIT = "mlflow"
BUCKET = "e2e-mlflow-artifacts"

# Drill 1: systemd begins the restart of a SIGKILLed server within RESTART_BEGINS seconds (the
# old processes stop, then RestartSec=100ms), and it serves again within RECOVERY_LIMIT.
RESTART_BEGINS = 2
RECOVERY_LIMIT = 120
# Drill 4: one artifact call while S3 does not answer ends with the server's error within this
# bound: botocore's 3 attempts (standard retry mode) x mlflow_server_s3_timeout (20 s), plus its
# backoff, inside the MLflow client's own request timeout (120 s, its default, set explicitly).
S3_DOWN_BOUND = 100
CLIENT_DEFAULT_TIMEOUT = "120"
# Tracking calls while S3 is down, and artifact calls on a full spool: prompt.
PROMPT = 30


def unit():
    out = on_host("systemctl", "show", UNIT, "-p", "MainPID,NRestarts,ActiveState,SubState,Environment").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal_since(epoch):
    return on_host("journalctl", "-u", UNIT, "--no-pager", "-o", "cat", "--since", f"@{int(epoch)}").stdout


def wait_healthy(timeout=300):
    started = time.monotonic()
    while front_door_status("/health", auth=False, timeout=5) != 200:
        assert time.monotonic() - started < timeout, "the front door's /health did not come back"
        time.sleep(1)


def pg_isready():
    return subprocess.run(["docker", "exec", "-u", "postgres", DB, "pg_isready", "-q"], check=False).returncode == 0


def host_pid(pid_in_container):
    """This machine's PID of a process of the EC2 stand-in."""
    init = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", HOST], capture_output=True, text=True, check=True)
    namespace = os.readlink(f"/proc/{init.stdout.strip()}/ns/pid")
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or os.readlink(proc / "ns" / "pid") != namespace:
                continue
            nspid = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("NSpid:"))
        except (OSError, StopIteration):
            continue
        if nspid.split()[-1] == str(pid_in_container):
            return int(proc.name)
    raise AssertionError(f"process {pid_in_container} of {HOST} not found from this machine")


def in_unit_namespace(pid, *argv):
    """Run argv in the mount namespace of the unit's process `pid` (as the EC2 stand-in knows it)."""
    return subprocess.run(["nsenter", "-t", str(host_pid(pid)), "-m", *argv], capture_output=True, text=True, check=False)


def s3_keys(run_id):
    pages = aws("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []) if f"/{run_id}/" in o["Key"])


@pytest.fixture(scope="module")
def experiment(client_env):
    return mlflow_client("""
        found = client.get_experiment_by_name("fault-drills")
        emit(id=found.experiment_id if found else client.create_experiment("fault-drills"))
    """, client_env)["id"]


# Tries one artifact call and reports how it ended: (ok, seconds, error).
ARTIFACT_CALL = """
    run_id, call, path = sys.argv[1:4]
    started = time.monotonic()
    try:
        if call == "upload":
            client.log_artifact(run_id, path)
        else:
            client.list_artifacts(run_id)
    except Exception as exc:
        emit(ok=False, seconds=time.monotonic() - started, error=f"{type(exc).__name__}: {exc}")
    else:
        emit(ok=True, seconds=time.monotonic() - started, error="")
"""


# --- Drill 4: the S3 endpoint does not answer ------------------------------------------


def test_s3_down_tracking_works_artifacts_fail_clearly_then_recover(client_env, experiment, tmp_path):
    """e2e-moto (the S3 endpoint, and the AWS API) paused: runs, metrics and searches still
    work; an artifact call ends with an error instead of hanging; after S3 is back the same
    calls work, with nothing restarted."""
    before = unit()
    small = tmp_path / "during-outage.txt"
    small.write_text("written while S3 was down\n")
    run_id = mlflow_client("""
        run = client.create_run(sys.argv[1])
        path = os.path.join(sys.argv[2], "before-outage.txt")
        with open(path, "w") as f:
            f.write("written before the outage\\n")
        client.log_artifact(run.info.run_id, path)
        emit(run_id=run.info.run_id)
    """, client_env, experiment, tmp_path)["run_id"]
    subprocess.run(["docker", "pause", MOTO], check=True, capture_output=True)
    try:
        tracking = mlflow_client("""
            experiment, run_id = sys.argv[1:3]
            seconds = {}
            started = time.monotonic()
            new = client.create_run(experiment)
            seconds["create_run"] = time.monotonic() - started
            started = time.monotonic()
            client.log_metric(new.info.run_id, "during_s3_outage", 1.0)
            client.log_param(run_id, "logged_during_s3_outage", "yes")
            seconds["log_metric+log_param"] = time.monotonic() - started
            started = time.monotonic()
            found = client.search_runs([experiment], filter_string="metrics.during_s3_outage = 1")
            seconds["search_runs"] = time.monotonic() - started
            emit(seconds=seconds, found=[r.info.run_id for r in found], new=new.info.run_id)
        """, client_env, experiment, run_id, timeout=300)
        assert tracking["new"] in tracking["found"], tracking
        assert all(s < PROMPT for s in tracking["seconds"].values()), tracking
        print("S3 down, tracking calls (s): " + ", ".join(f"{k} {v:.2f}" for k, v in tracking["seconds"].items()))
        # One attempt per call (no client retries), with the client's default request timeout: what
        # the server itself does with an S3 that does not answer, and that a client at its defaults
        # gets the server's error rather than its own timeout. Upload and listing at the same time.
        with ThreadPoolExecutor(2) as pool:
            futures = {call: pool.submit(mlflow_client, ARTIFACT_CALL, client_env, run_id, call, small,
                                         timeout=S3_DOWN_BOUND + 120, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                                         MLFLOW_HTTP_REQUEST_TIMEOUT=CLIENT_DEFAULT_TIMEOUT)
                       for call in ("upload", "list")}
            outcomes = {call: future.result() for call, future in futures.items()}
        for call, outcome in outcomes.items():
            print(f"S3 down, artifact {call}: failed={not outcome['ok']} after {outcome['seconds']:.0f} s: {outcome['error'][:300]}")
            assert not outcome["ok"], f"artifact {call} succeeded with S3 down: {outcome}"
            assert outcome["seconds"] < S3_DOWN_BOUND, outcome
            assert "500" in outcome["error"], outcome
    finally:
        subprocess.run(["docker", "unpause", MOTO], check=False, capture_output=True)
    # Back: the same calls work, with the default client settings and no restart.
    (tmp_path / "download").mkdir()
    started = time.monotonic()
    after = mlflow_client("""
        run_id, path = sys.argv[1:3]
        client.log_artifact(run_id, path)
        listed = sorted(f.path for f in client.list_artifacts(run_id))
        local = client.download_artifacts(run_id, "before-outage.txt", sys.argv[3])
        with open(local) as f:
            emit(listed=listed, before=f.read(), params=client.get_run(run_id).data.params)
    """, client_env, run_id, small, tmp_path / "download", timeout=600)
    recovered = time.monotonic() - started
    assert after["listed"] == ["before-outage.txt", "during-outage.txt"], after
    assert after["before"] == "written before the outage\n", after
    assert after["params"] == {"logged_during_s3_outage": "yes"}, after
    now = unit()
    assert (now["MainPID"], now["NRestarts"], now["ActiveState"]) == (before["MainPID"], before["NRestarts"], "active")
    print(f"S3 back: upload + list + download {recovered:.1f} s, MLflow not restarted (MainPID {now['MainPID']})")


# --- Drill 5: the disk MLflow spools uploads to is full --------------------------------

# A proxied upload without a Content-Length (chunked), as a client that streams a body of unknown
# size sends it: the one kind of upload the server still receives into a temporary file.
CHUNKED_UPLOAD = """
    import requests
    run_id, path = sys.argv[1:3]
    where = client.get_run(run_id).info.artifact_uri[len("mlflow-artifacts:"):].lstrip("/")
    def body():
        with open(path, "rb") as f:
            while chunk := f.read(1024 * 1024):
                yield chunk
    started = time.monotonic()
    answer = requests.put(f"{os.environ['MLFLOW_TRACKING_URI']}/api/2.0/mlflow-artifacts/artifacts/{where}/"
                          f"{os.path.basename(path)}", data=body(), timeout=300,
                          auth=(os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]),
                          verify=os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"])
    emit(status=answer.status_code, seconds=time.monotonic() - started, body=answer.text[:300])
"""


def test_full_upload_spool_streamed_uploads_pass_unsized_ones_fail_clearly(client_env, experiment, tmp_path):
    """The server sends a proxied upload on to S3 while it arrives (mlflow_server_stream_artifact_uploads),
    so the unit's temporary directory (TMPDIR) is not on its path; nginx streams artifact bodies too.
    A 4 MiB file system there: an 8 MiB upload of the MLflow client (which sends a Content-Length)
    goes through as one multipart object and leaves nothing in the spool. A body without a length
    is still received into a temporary file first, as MLflow does: it gets an error at once, the
    server stays healthy, no partial artifact appears, and it works again once there is room."""
    before = unit()
    environment = dict(item.split("=", 1) for item in before["Environment"].split() if "=" in item)
    spool = environment.get("TMPDIR", "/tmp")
    pid = before["MainPID"]
    big = tmp_path / "bigger-than-the-spool.bin"
    big.write_bytes(os.urandom(8 * 1024 * 1024))
    unsized = tmp_path / "unsized.bin"
    unsized.write_bytes(os.urandom(8 * 1024 * 1024))
    run_id = mlflow_client("emit(run_id=client.create_run(sys.argv[1]).info.run_id)", client_env, experiment)["run_id"]
    mount = in_unit_namespace(pid, "mount", "-t", "tmpfs", "-o", "size=4m,mode=1777", "fault-drill", spool)
    assert mount.returncode == 0, mount.stderr
    drill_started = time.time()
    try:
        outcome = mlflow_client(ARTIFACT_CALL, client_env, run_id, "upload", big, timeout=300,
                                MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
        print(f"spool full ({spool}, 4 MiB), 8 MiB upload of the MLflow client: ok={outcome['ok']} after "
              f"{outcome['seconds']:.1f} s {outcome['error'][:300]}")
        assert outcome["ok"], outcome
        stored = aws("s3").head_object(Bucket=BUCKET, Key=next(key for key in s3_keys(run_id) if key.endswith(big.name)))
        assert stored["ContentLength"] == 8 * 1024 * 1024 and stored["ETag"].endswith('-1"'), stored

        outcome = mlflow_client(CHUNKED_UPLOAD, client_env, run_id, unsized, timeout=300)
        print(f"spool full, 8 MiB upload without a Content-Length: HTTP {outcome['status']} after "
              f"{outcome['seconds']:.1f} s: {outcome['body'][:200]}")
        assert outcome["status"] == 500, outcome
        assert outcome["seconds"] < PROMPT, outcome
        assert front_door_status("/health", auth=False) == 200
        assert front_door_status("/api/2.0/mlflow/experiments/search?max_results=1") == 200
        # The failed upload's temporary file is gone (and the streamed one never had one), and
        # nothing of the failed upload reached S3 or the run's artifacts.
        left = in_unit_namespace(pid, "find", spool, "-mindepth", "1")
        assert left.returncode == 0 and left.stdout == "", left.stdout + left.stderr
        assert not [key for key in s3_keys(run_id) if key.endswith(unsized.name)]
        listed = mlflow_client("emit(listed=[f.path for f in client.list_artifacts(sys.argv[1])])",
                               client_env, run_id)["listed"]
        assert listed == [big.name], listed
        assert not aws("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads")
        log = journal_since(drill_started)
        assert "No space left on device" in log, log[-3000:]
    finally:
        umount = in_unit_namespace(pid, "umount", spool)
    assert umount.returncode == 0, umount.stderr
    started = time.monotonic()
    outcome = mlflow_client(CHUNKED_UPLOAD, client_env, run_id, unsized, timeout=300)
    assert outcome["status"] == 200, outcome
    sizes = mlflow_client("emit(sizes={f.path: f.file_size for f in client.list_artifacts(sys.argv[1])})",
                          client_env, run_id)["sizes"]
    assert sizes == {big.name: 8 * 1024 * 1024, unsized.name: 8 * 1024 * 1024}, sizes
    now = unit()
    assert (now["MainPID"], now["NRestarts"], now["ActiveState"]) == (before["MainPID"], before["NRestarts"], "active")
    print(f"spool has room again: the unsized 8 MiB upload took {time.monotonic() - started:.1f} s; "
          f"S3 holds {len(s3_keys(run_id))} object(s) for the run")


# --- Drill 2: PostgreSQL restarts while clients log metrics ----------------------------

# A client logging one metric per call through the front door until told to stop, with the
# MLflow client's own retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES, 7 by default).
METRIC_LOGGER = """
    experiment, stop, ready = sys.argv[1:4]
    run_id = client.create_run(experiment).info.run_id
    acknowledged, errors, calls = [], [], []
    step = 0
    while not os.path.exists(stop):
        started = time.time()
        try:
            client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
        except Exception as exc:
            errors.append(f"step {step}: {type(exc).__name__}: {exc}"[:500])
        else:
            acknowledged.append(step)
        calls.append([started, time.time() - started])
        step += 1
        if len(acknowledged) == 1 and not os.path.exists(ready):
            open(ready, "w").close()
    client.set_terminated(run_id)
    emit(run_id=run_id, acknowledged=acknowledged, errors=errors, calls=calls)
"""


def test_database_restart_loses_no_metric_and_keeps_the_server(client_env, experiment, tmp_path):
    before = unit()
    stop = tmp_path / "stop"
    clients = 3
    procs = [subprocess.Popen([str(VENV_BIN / "python"), "-c", CLIENT_PRELUDE + textwrap.dedent(METRIC_LOGGER),
                               experiment, str(stop), str(tmp_path / f"ready-{i}")],
                              env=client_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(clients)]
    restart = {}
    outputs = []
    try:
        deadline = time.monotonic() + 180
        while not all((tmp_path / f"ready-{i}").exists() for i in range(clients)):
            assert all(p.poll() is None for p in procs), "a metric client ended early"
            assert time.monotonic() < deadline, "the metric clients did not start logging"
            time.sleep(0.5)
        time.sleep(3)
        restart["start"] = time.time()
        res = subprocess.run(["docker", "exec", DB, "systemctl", "restart", "postgresql"],
                             capture_output=True, text=True, check=False)
        restart["end"] = time.time()
        assert res.returncode == 0, res.stderr
        time.sleep(10)  # the clients keep logging against the restarted database
    finally:
        stop.touch()
        for proc in procs:
            try:
                outputs.append(proc.communicate(timeout=900))
            except subprocess.TimeoutExpired:
                proc.kill()
                outputs.append(proc.communicate())
        if not pg_isready():
            subprocess.run(["docker", "exec", DB, "systemctl", "start", "postgresql"], check=False)
    results = []
    for proc, (out, err) in zip(procs, outputs):
        lines = [line[len("RESULT "):] for line in out.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, out[-2000:] + err[-3000:]
        results.append(json.loads(lines[-1]))
    window = (restart["start"], restart["end"])
    during = sum(1 for r in results for t, d in r["calls"] if t < window[1] and t + d > window[0])
    slowest = max(d for r in results for _, d in r["calls"])
    acknowledged = sum(len(r["acknowledged"]) for r in results)
    log = journal_since(window[0] - 1)
    print(f"PostgreSQL restart took {window[1] - window[0]:.1f} s; {clients} clients, {acknowledged} metrics "
          f"acknowledged, {during} calls in flight during the restart, slowest call {slowest:.1f} s; "
          f"server log since: {log.count('OperationalError')} OperationalError lines, "
          f"{len(re.findall(r'HTTP/1.1\" 5[0-9][0-9] ', log))} answers 5xx")
    for r in results:
        assert r["errors"] == [], r["errors"][:5]
    stored = mlflow_client("""
        emit(steps={run_id: sorted(m.step for m in client.get_metric_history(run_id, "loss"))
                    for run_id in sys.argv[1:]})
    """, client_env, *[r["run_id"] for r in results])["steps"]
    for r in results:
        assert stored[r["run_id"]] == r["acknowledged"], (
            f"run {r['run_id']}: {len(r['acknowledged'])} acknowledged, {len(stored[r['run_id']])} stored")
    assert during > 0, "no call was in flight while PostgreSQL restarted: the drill proved nothing"
    now = unit()
    assert (now["MainPID"], now["NRestarts"], now["ActiveState"]) == (before["MainPID"], before["NRestarts"], "active"), (
        before, now)
    print(f"MLflow kept MainPID {now['MainPID']} and NRestarts={now['NRestarts']}; "
          f"every acknowledged metric stored ({acknowledged})")


# --- Drill 1: the server's main process is killed --------------------------------------


def unit_cpu_seconds():
    """CPU time (user + system, with waited-for children) of the unit's processes so far."""
    group = unit_property("ControlGroup")
    script = (f"for p in $(cat /sys/fs/cgroup/systemd{group}/cgroup.procs); do cat /proc/$p/stat 2>/dev/null; echo; done")
    total = 0
    for line in on_host("sh", "-c", script).stdout.splitlines():
        if ")" in line:
            fields = line.rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def seconds(value):
    return "never" if value is None else f"{value:.1f} s"


def unit_property(name):
    return on_host("systemctl", "show", UNIT, "-p", name, "--value").stdout.strip()


def test_sigkilled_server_restarts_at_once_and_serves_again():
    """SIGKILL of the unit's main process (the `mlflow server` CLI): systemd restarts the unit
    at once (Restart=on-failure, RestartSec=100ms) and the front door serves again, /health
    and authenticated calls, with nobody running Ansible.

    The issue's target is 10 s. The wait before the restart is now 0.1 s (it was 5 s); the rest
    is the start itself, CPU-bound: the CLI and each of the 2 x vCPU workers import MLflow, 17-22
    CPU-seconds here, so 10 s is not reachable on 2 vCPUs even when idle, and this shared
    machine gives the container well under 2 (README, "Faults"). Asserted: the restart begins
    within RESTART_BEGINS of the kill and the server serves again within RECOVERY_LIMIT; the
    measured times are printed."""
    before = unit()
    healthy = authenticated = None
    try:
        on_host("kill", "-KILL", before["MainPID"])
        killed_at, killed = time.time(), time.monotonic()
        while time.monotonic() - killed < RECOVERY_LIMIT:
            if unit_property("MainPID") not in ("0", before["MainPID"]):
                if healthy is None and front_door_status("/health", auth=False, timeout=2) == 200:
                    healthy = time.monotonic() - killed
                if healthy is not None and front_door_status("/api/2.0/mlflow/experiments/search?max_results=1",
                                                             timeout=5) == 200:
                    authenticated = time.monotonic() - killed
                    break
            time.sleep(0.2)
        cpu = unit_cpu_seconds()
    finally:
        if unit_property("ActiveState") != "active":
            on_host("systemctl", "start", UNIT, check=False)
        wait_healthy()
    after = unit()
    events = {}
    for line in on_host("journalctl", "-u", UNIT, "--no-pager", "-o", "short-unix",
                        "--since", f"@{int(killed_at) - 1}").stdout.splitlines():
        stamp, _, message = line.partition(" ")
        for event, text in (("exited", "Main process exited, code=killed, status=9/KILL"), ("starting", "Starting ")):
            if text in message and event not in events:
                events[event] = float(stamp)
    assert set(events) == {"exited", "starting"}, events
    begins = events["starting"] - events["exited"]
    print(f"SIGKILL of the main process: the restart began {begins:.1f} s after it died; /health 200 through "
          f"the front door after {seconds(healthy)}, an authenticated API call after {seconds(authenticated)}; the start "
          f"used {cpu:.1f} CPU-s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    assert healthy is not None and authenticated is not None, f"not serving {RECOVERY_LIMIT} s after the kill"
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
    assert begins <= RESTART_BEGINS, f"systemd waited {begins:.1f} s before restarting the server"
