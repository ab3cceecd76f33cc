"""Verify the adoption of a hand-made MLflow 2.22 deployment (molecule/upgrade/molecule.yml):
the failure half-way and its recovery, the full export before and after, the backup set and
the rollback drill (restore into a new database, served by the team's 2.22), a full disk."""

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import testinfra.utils.ansible_runner

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = RUNNER.get_hosts("test_hosts")

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))
from pins import MLFLOW_VERSION as VERSION  # noqa: E402

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
DATA = ROOT / "molecule" / "shared" / "files" / "mlflow_data.py"
ADMIN_PASSWORD = "Adm1n-pa55word-for-tests"
MASTER = {"username": "teamadmin", "password": "Team-master-pa55word"}
PG_DUMP = "/usr/lib/postgresql/17/bin/pg_dump"
DBCTL = f"/opt/mlflow/venvs/{VERSION}/bin/python /opt/mlflow/bin/mlflow-dbctl.py --env-file /etc/mlflow/mlflow.env"
BACKUPS = "/var/backups/mlflow"


def address(host):
    return host.check_output("hostname -I").split()[0]


def data_tool(*args, auth=True):
    """mlflow_data.py on the test machine, as a user's client: S3 straight to the emulator."""
    env = dict(os.environ, NO_PROXY="*", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD="false",
               AWS_DEFAULT_REGION="us-east-1",
               MLFLOW_S3_ENDPOINT_URL=f"http://{(EPHEMERAL / 'moto-address').read_text().strip()}:5000")
    if auth:
        env.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD)
    proc = subprocess.run([sys.executable, str(DATA), *args], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return proc


def journal(host):
    return [json.loads(line) for line in host.file(f"{BACKUPS}/migrations.jsonl").content_string.splitlines() if line]


def dbctl_json(host, args, stdin=None):
    cmd = f"{DBCTL} {args}"
    if stdin is not None:
        cmd = f"printf %s {shlex.quote(json.dumps(stdin))} | {cmd}"
    res = host.run(cmd)
    return res.rc, json.loads(res.stdout or "{}")


def test_the_run_failed_between_the_two_migrations(host):
    """prepare's run was killed right after `mlflow db upgrade`: the tracking schema is new, the
    auth schema is not, the play failed with a message that names the way back."""
    fault = json.loads(host.file("/root/fault.json").content_string)
    killed = re.search(r"^killed \[\d+", fault["watcher"], re.M)
    assert killed, fault["watcher"]
    state = fault["state"]
    assert state["tracking"]["current"] == state["tracking"]["head"], state
    assert state["auth"]["current"] != state["auth"]["head"] and state["needed"], state
    failure = fault["failure"] or ""
    assert "exit code -9 and no report" in failure and "migrations.jsonl" in failure, failure
    assert "mlflow-dbctl.py restore" in failure, failure
    print(f"half-way state: tracking {state['tracking']['current']} (head), auth {state['auth']['current']} "
          f"(head {state['auth']['head']}); {killed.group(0)}]")


def test_the_rerun_finished_the_interrupted_migration(host):
    """The journal shows the interrupted run (backed up, never done: the kill may land before or
    after it logs "tracking-upgraded"), and the re-run that found it and had only the auth
    database left to migrate (the revisions, not the journal, decide); nothing is left to do."""
    entries = journal(host)
    runs = {}
    for entry in entries:
        if "phase" in entry:
            runs.setdefault(entry["run"], []).append(entry["phase"])
    first, second = list(runs.values())[:2]
    assert first[0] == "backed-up" and "done" not in first, runs
    assert second[-1] == "done" and "tracking-upgraded" not in second, runs
    done = [e for e in entries if "phase" not in e]
    assert len(done) == 1 and done[0]["upgraded"] == ["auth"], done
    assert done[0]["resumed"]["phase"] in first, done[0]
    print(f"journal: interrupted run {first}, re-run {second} (resumed after {done[0]['resumed']['phase']})")
    _rc, status = dbctl_json(host, "status")
    assert not status["needed"], status


def test_full_export_identical_after_the_adoption(host):
    """Everything the team's 2.22 server held is there, identical, through MLflow 3 and basic-auth."""
    after = EPHEMERAL / "export-after.json"
    started = time.monotonic()
    res = data_tool("export", "--uri", f"http://{address(host)}:5000", "--out", str(after))
    assert res.returncode == 0, res.stderr[-2000:]
    counts = json.loads(res.stdout.strip().splitlines()[-1])
    assert counts["runs"] >= 200 and counts["registered_models"] >= 3 and counts["artifacts"] > 0, counts
    before = json.loads((EPHEMERAL / "export-before.json").read_text())
    assert min(len(h) for r in before["runs"] for k, h in r["metric_history"].items() if k != "r2") >= 50
    compared = data_tool("compare", str(EPHEMERAL / "export-before.json"), str(after))
    assert compared.returncode == 0 and compared.stdout.strip() == "identical", compared.stdout
    print(f"export after adoption: {counts}, identical to the one before ({time.monotonic() - started:.0f} s)")


def test_cutover_time(host):
    """From the team's server stopped to MLflow 3 serving: one failed run and the recovery run."""
    stopped = float(host.file("/root/cutover-started").content_string)
    active = host.check_output("systemctl show mlflow -p ActiveEnterTimestamp --value")
    up = float(host.check_output(f"date -d {shlex.quote(active)} +%s.%N"))
    assert up > stopped
    print(f"cutover: {up - stopped:.0f} s from the team's server stopped to mlflow.service active "
          "(including the failed run and the recovery run)")


def test_backups_are_pairs_with_a_manifest(host):
    sets = sorted(host.check_output(f"ls {BACKUPS} | grep '^backup-.*json$' || true").split())
    assert len(sets) == 2, sets  # before the tracking migration, and before the auth one
    first = json.loads(host.file(f"{BACKUPS}/{sets[0]}").content_string)
    second = json.loads(host.file(f"{BACKUPS}/{sets[1]}").content_string)
    assert list(first["databases"]) == ["tracking"], first  # the team had no auth database
    assert first["mlflow_version"] == VERSION and first["databases"]["tracking"]["revision"] != second["databases"]["tracking"]["revision"]
    for manifest in (first, second):
        for entry in manifest["databases"].values():
            f = host.file(f"{BACKUPS}/{entry['file']}")
            assert f.mode == 0o600 and f.size == entry["size"]
            assert host.check_output(f"sha256sum {BACKUPS}/{entry['file']}").split()[0] == entry["sha256"]


def test_rollback_drill_restores_the_pre_upgrade_backup_and_the_old_version_serves_it(host):
    """The documented rollback: the set taken before the tracking migration restored into a new
    database (checksums first), the team's MLflow 2.22 started on it: the same export."""
    first = sorted(host.check_output(f"ls {BACKUPS} | grep '^backup-.*json$'").split())[0]
    stamp = first[len("backup-"):-len(".json")]
    started = time.monotonic()
    rc, out = dbctl_json(host, f"restore --backup-dir {BACKUPS} --set {stamp} --tracking-db mlflow_rollback --create "
                               f"--pg-dump {PG_DUMP}", stdin=MASTER)
    assert rc == 0, out
    restored = time.monotonic() - started
    assert out["databases"] == {"tracking": "mlflow_rollback"} and "created database mlflow_rollback" in out["actions"]
    # A second restore into the now full database is refused: nothing is overwritten without --clean.
    rc2, again = dbctl_json(host, f"restore --backup-dir {BACKUPS} --set {stamp} --tracking-db mlflow_rollback --pg-dump {PG_DUMP}")
    assert rc2 == 1 and "not empty" in again["error"], again
    uri = f"postgresql://{MASTER['username']}:{MASTER['password']}@postgres.test:5432/mlflow_rollback"
    host.check_output(
        "systemd-run --unit team-rollback -E MLFLOW_S3_ENDPOINT_URL=http://moto.test:5000 -E AWS_ACCESS_KEY_ID=testing "
        "-E AWS_SECRET_ACCESS_KEY=testing -E AWS_DEFAULT_REGION=us-east-1 /opt/team-mlflow/bin/mlflow server "
        f"-h 0.0.0.0 -p 5001 --backend-store-uri {shlex.quote(uri)} --default-artifact-root s3://mlflow-artifacts/team")
    try:
        for _ in range(90):
            if host.run("python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:5001/health')\"").rc == 0:
                break
            time.sleep(2)
        serving = time.monotonic() - started
        out_file = EPHEMERAL / "export-rollback.json"
        res = data_tool("export", "--uri", f"http://{address(host)}:5001", "--out", str(out_file), auth=False)
        assert res.returncode == 0, res.stderr[-2000:]
        compared = data_tool("compare", str(EPHEMERAL / "export-before.json"), str(out_file))
        assert compared.stdout.strip() == "identical", compared.stdout
    finally:
        host.run("systemctl stop team-rollback")
    print(f"rollback drill: set {stamp} restored in {restored:.1f} s, MLflow 2.22 serving it {serving:.0f} s after "
          "the restore began; its export is identical to the one before the upgrade")


def test_a_full_disk_fails_the_backup_cleanly(host):
    """A backup onto a full file system fails, says why, and leaves no half set behind."""
    tiny = "/root/tiny-backups"
    host.check_output(f"mkdir -p {tiny} && (mountpoint -q {tiny} || mount -t tmpfs -o size=64k tmpfs {tiny})")
    try:
        rc, out = dbctl_json(host, f"backup --backup-dir {tiny} --pg-dump {PG_DUMP}")
        assert rc == 1 and out["failed"] and "No space left on device" in out["error"], out
        assert host.check_output(f"ls -A {tiny}") == "", "a partial backup was left behind"
    finally:
        host.run(f"umount {tiny}")
    before = len(host.check_output(f"ls {BACKUPS}").split())
    rc, out = dbctl_json(host, f"backup --backup-dir {BACKUPS} --pg-dump {PG_DUMP}")
    assert rc == 0 and set(out["databases"]) == {"tracking", "auth"}, out
    assert len(host.check_output(f"ls {BACKUPS}").split()) == before + 3  # two dumps and the manifest
    print(f"full disk: backup refused ({out.get('set')} made afterwards on the real disk)")
