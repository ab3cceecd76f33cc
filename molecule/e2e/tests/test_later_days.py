"""Later days, after test_e2e and test_faults (this changes the deployment's secrets): one run
of configure.yml after a change of the admin's password rotates it, and prunes old backups and
venvs; then the instance is stopped and started, and configure.yml alone changes nothing (which
is also the second run after the rotation: it settled in one).

MLflow itself reads MLFLOW_AUTH_ADMIN_PASSWORD only when it creates the admin; mlflow_server
sets the stored password (mlflow-dbctl.py admin-password), and the same run's mlflow_auth and
gc use it. Retention: mlflow_server_db_backup_keep (10 per database) and
mlflow_server_venvs_keep (2: the running version and the newest other)."""

import base64
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request

from conftest import CONTROL, EPHEMERAL, HOST, URL, aws, front_door_status, mlflow_client, playbook, recap, secret

# mlflow_proxy_auth_cache_seconds and mlflow_server_auth_cache_ttl_seconds (30 s each, one after
# the other at worst), plus slack for a loaded machine.
STALE_WINDOW = 60 + 60


def status(username, password):
    ctx = ssl.create_default_context(cafile=str(CONTROL / "front-door-ca.pem"))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    req = urllib.request.Request(f"{URL}/api/2.0/mlflow/experiments/search?max_results=1",
                                 headers={"Authorization": f"Basic {token}"})
    try:
        with opener.open(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def plant_old_backups_and_venvs():
    """12 backups of each database, a day apart, and two venvs of older versions, older still."""
    script = "\n".join([
        "set -e",
        "mkdir -p -m 0700 /var/backups/mlflow",
        "for db in mlflow mlflow_auth; do for d in 01 02 03 04 05 06 07 08 09 10 11 12; do",
        "  f=/var/backups/mlflow/$db-0123abcd-202610${d}T000000Z.dump; echo x > $f; touch -d 2026-10-$d $f",
        "done; done",
        "for v in 2.22.0 3.16.1; do mkdir -p /opt/mlflow/venvs/$v; done",
        "touch -d 2026-01-01 /opt/mlflow/venvs/2.22.0; touch -d 2026-06-01 /opt/mlflow/venvs/3.16.1",
    ])
    subprocess.run(["docker", "exec", "-i", HOST, "sh"], input=script, text=True, check=True, capture_output=True)


def listing(path):
    res = subprocess.run(["docker", "exec", HOST, "ls", "-1", path], capture_output=True, text=True, check=True)
    return sorted(res.stdout.split())


def test_one_run_rotates_the_admin_password_and_prunes_backups_and_venvs():
    vault = EPHEMERAL / "secrets" / "admin"  # the scenario's "vault" file behind mlflow_server_auth_admin_password
    old = secret("admin")
    assert status("admin", old) == 200
    plant_old_backups_and_venvs()
    running = listing("/opt/mlflow/venvs")
    new = "Rot" + old[::-1]
    vault.write_text(new + "\n")
    rc, out = playbook("playbooks/configure.yml")
    assert rc == 0, out[-5000:]
    assert re.search(r"Set the basic-auth admin's stored password[^\n]*\n(\S.*\n)?changed: ", out), out[-5000:]
    assert status("admin", new) == 200
    started = time.monotonic()
    while (code := status("admin", old)) == 200:
        assert time.monotonic() - started < STALE_WINDOW, "the old admin password still works"
        time.sleep(10)
    assert code == 401, code
    print(f"old admin password refused {time.monotonic() - started:.0f} s after the run")
    gc_env = subprocess.run(["docker", "exec", "-i", HOST, "grep", "-cF", "-f", "/dev/stdin", "/etc/mlflow/mlflow-gc.env"],
                            input=new + "\n", capture_output=True, text=True, check=False)
    assert gc_env.stdout.strip() == "1", "the gc timer does not use the new password"
    backups = listing("/var/backups/mlflow")
    for db in ("mlflow", "mlflow_auth"):
        of_db = [b for b in backups if re.match(rf"^{db}-[0-9a-z]+-\d{{8}}T\d{{6}}Z\.dump$", b)]
        assert len(of_db) == 10, backups
        assert f"{db}-0123abcd-20261012T000000Z.dump" in of_db and f"{db}-0123abcd-20261001T000000Z.dump" not in of_db
    venvs = listing("/opt/mlflow/venvs")
    assert "3.16.1" in venvs and "2.22.0" not in venvs and len(venvs) == 2, (running, venvs)
    # The next run changes nothing: the next test's configure.yml after the reboot.


def test_stop_start_then_configure_alone_changes_nothing(instance, client_env, tmp_path):
    """A later day: the instance was stopped and started (the machine rebooted). Without
    Ansible, MLflow and nginx come back by themselves, with authentication and the data
    logged before the reboot (the reboot fault drill, README "Faults"). Then the README's
    configure-only command runs in a new process, with nothing in memory from
    provisioning. It finds the server by its tags, waits for it to answer, and changes
    nothing: the Elastic IP kept the address the certificate and allowed hosts name. It is
    the second run after the rotation above, so changed=0 also shows that one run settled it."""
    client_env = dict(client_env, MLFLOW_TRACKING_PASSWORD=secret("admin"))  # the rotated one
    ec2 = aws("ec2")
    iid = instance["InstanceId"]
    before = ec2.describe_addresses(Filters=[{"Name": "instance-id", "Values": [iid]}])["Addresses"]
    logged = mlflow_client("""
        experiment = client.get_experiment_by_name("reboot-drill")
        run = client.create_run(experiment.experiment_id if experiment else client.create_experiment("reboot-drill"))
        client.log_param(run.info.run_id, "before", "reboot")
        client.log_metric(run.info.run_id, "score", 0.5, step=7)
        path = os.path.join(sys.argv[1], "note.txt")
        with open(path, "w") as f:
            f.write("logged before the reboot\\n")
        client.log_artifact(run.info.run_id, path)
        emit(run_id=run.info.run_id)
    """, client_env, tmp_path)
    ec2.stop_instances(InstanceIds=[iid])
    ec2.start_instances(InstanceIds=[iid])
    rebooted = time.monotonic()
    subprocess.run(["docker", "restart", HOST], check=True, capture_output=True)  # the reboot itself
    while front_door_status("/api/2.0/mlflow/experiments/search?max_results=1", timeout=5) != 200:
        assert time.monotonic() - rebooted < 600, "MLflow did not come back behind the front door after the reboot"
        time.sleep(1)
    back = time.monotonic() - rebooted
    assert front_door_status("/api/2.0/mlflow/experiments/search?max_results=1", auth=False) == 401
    (tmp_path / "download").mkdir()
    found = mlflow_client("""
        run = client.get_run(sys.argv[1])
        history = [(m.step, m.value) for m in client.get_metric_history(sys.argv[1], "score")]
        with open(client.download_artifacts(sys.argv[1], "note.txt", sys.argv[2])) as f:
            emit(params=run.data.params, history=history, note=f.read())
    """, client_env, logged["run_id"], tmp_path / "download")
    assert found == {"params": {"before": "reboot"}, "history": [[7, 0.5]], "note": "logged before the reboot\n"}, found
    print(f"reboot: MLflow answered an authenticated call through the front door {back:.0f} s after "
          "`docker restart` began, anonymous calls 401, the run logged before it intact")
    started = time.monotonic()
    rc, out = playbook("playbooks/configure.yml")
    elapsed = time.monotonic() - started
    assert rc == 0, out[-5000:]
    hosts = recap(out)
    assert any(h.startswith("i-") for h in hosts), hosts
    assert all(h["changed"] == 0 and h["failed"] == 0 for h in hosts.values()), hosts
    assert f"MLflow is up behind its TLS front door: {URL}" in out
    after = ec2.describe_addresses(Filters=[{"Name": "instance-id", "Values": [iid]}])["Addresses"]
    assert [a["PublicIp"] for a in after] == [a["PublicIp"] for a in before], (before, after)
    assert front_door_status("/health", auth=False, timeout=30) == 200
    print(f"stop/start + reboot, then configure.yml alone: {elapsed:.0f} s, recap {hosts}")
