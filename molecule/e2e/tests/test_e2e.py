"""The deployment site.yml made, checked from outside as its users and operators see it.

Runs after converge and idempotence (both: the whole site.yml). Test order matters only
where said: the examples before serving their model. The later days (a reboot, configure.yml
alone, a rotated password) are in test_later_days.py.
"""

import json
import subprocess
import time
import urllib.request

import pytest
from conftest import CONTROL, DEPLOYMENT, ROOT, URL, VENV_BIN, aws, free_port, on_host, secret

EXAMPLES = ["iris_registry.py", "wine_elasticnet_sweep.py", "house_prices.py"]


# --- How Ansible reached the instance -------------------------------------------------


def test_cloud_init_applied_the_instances_user_data(instance):
    """The instance booted through cloud-init with the user data the provision play gave
    EC2: the instance ID from the emulator, the admin user with the deployment's key."""
    assert on_host("cloud-init", "status").stdout.split() == ["status:", "done"]
    assert on_host("cat", "/var/lib/cloud/data/instance-id").stdout.strip() == instance["InstanceId"]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    key = json.loads(aws("secretsmanager").get_secret_value(SecretId=tags["mlflow:ssh-key-secret"])["SecretString"])
    authorized = on_host("cat", f"/home/{tags['mlflow:admin-user']}/.ssh/authorized_keys").stdout
    assert key["public_key"].split()[1] in authorized
    assert on_host("sudo", "-n", "-l", "-U", tags["mlflow:admin-user"]).stdout.count("NOPASSWD: ALL") == 1
    # SSH keys only, and the instance's own host keys (cloud-init made them at first boot).
    sshd = on_host("sshd", "-T").stdout
    assert "passwordauthentication no" in sshd
    assert "permitrootlogin without-password" in sshd or "permitrootlogin no" in sshd


def test_instance_tags_index_the_deployment(instance):
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["mlflow:deployment"] == DEPLOYMENT
    for key in ("mlflow:bucket", "mlflow:db-instance", "mlflow:db-secret", "mlflow:ssh-key-secret", "mlflow:admin-user"):
        assert tags.get(key), f"instance tag {key} missing: configure.yml could not find the deployment"
    # The instance cannot read its own SSH key: the key's secret is outside its role's prefix.
    assert not tags["mlflow:ssh-key-secret"].startswith(f"mlflow/{DEPLOYMENT}/")


def test_control_node_key_is_private():
    key = CONTROL / "id_ed25519"
    assert key.is_file() and oct(key.stat().st_mode & 0o777) == "0o600"
    assert oct(CONTROL.stat().st_mode & 0o777) == "0o700"
    assert "BEGIN OPENSSH PRIVATE KEY" in key.read_text()


def test_stable_address_is_an_elastic_ip(instance):
    addresses = aws("ec2").describe_addresses(Filters=[{"Name": "tag:mlflow:deployment", "Values": [DEPLOYMENT]}])["Addresses"]
    assert len(addresses) == 1, addresses
    assert addresses[0]["InstanceId"] == instance["InstanceId"]


# --- The seeds' workloads through the front door --------------------------------------


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_through_the_front_door(script, client_env):
    started = time.monotonic()
    res = subprocess.run([str(VENV_BIN / "python"), str(ROOT / "examples" / script)], env=client_env,
                         text=True, capture_output=True, timeout=900, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    print(f"{script}: {time.monotonic() - started:.1f} s through {URL}: "
          + " | ".join(line for line in res.stdout.splitlines() if line.startswith(("run ", "sweep "))))


def test_model_served_by_alias_scores_over_http(client_env):
    """seed 003: `mlflow models serve` then curl /invocations - here the registered model
    by its alias, fetched from the deployed server over HTTPS with auth."""
    port = free_port()
    log = CONTROL / "models-serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/iris-classifier@champion",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=client_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if urllib.request.urlopen(f"{base}/ping", timeout=2).status == 200:
                    break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.5)
        else:
            pytest.fail("mlflow models serve did not answer /ping:\n" + log.read_text()[-3000:])
        assert proc.poll() is None, log.read_text()[-3000:]
        # Two setosa flowers and one virginica (iris classes 0 and 2).
        body = json.dumps({"dataframe_split": {
            "columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
            "data": [[5.1, 3.5, 1.4, 0.2], [4.9, 3.0, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}}).encode()
        req = urllib.request.Request(f"{base}/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            predictions = json.loads(resp.read())["predictions"]
        assert predictions == [0, 0, 2], predictions
        print(f"models:/iris-classifier@champion served on {base}: predictions {predictions}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- Secrets never reach a bucket -----------------------------------------------------


def test_no_secret_in_any_bucket_version():
    """Every version of every object in every bucket of the emulator, after converge and
    idempotence: no transfer files, and none holds a secret."""
    s3 = aws("s3")
    tags = {}
    secrets_mgr = aws("secretsmanager")
    db = json.loads(secrets_mgr.get_secret_value(SecretId=f"mlflow/{DEPLOYMENT}/db-master")["SecretString"])
    ssh_key = json.loads(secrets_mgr.get_secret_value(SecretId=f"mlflow-admin/{DEPLOYMENT}/ssh-key")["SecretString"])
    flask_key = on_host("cat", "/etc/mlflow/flask-secret-key").stdout.strip()
    needles = {
        "database password": db["password"], "admin password": secret("admin"),
        "analyst password": secret("analyst"), "flask secret key": flask_key,
        "ssh private key": ssh_key["private_key"].splitlines()[1],
    }
    assert all(len(v) >= 12 for v in needles.values())
    listing = {}
    for bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        versions = []
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            versions += page.get("Versions", []) + page.get("DeleteMarkers", [])
        listing[bucket] = versions
        for v in versions:
            assert "ansible-tmp" not in v["Key"] and not v["Key"].endswith(".env"), f"s3://{bucket}/{v['Key']}"
            if v.get("Size", 0) and v["Size"] <= 8 * 1024 * 1024:
                body = s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
                for name, value in needles.items():
                    assert value.encode() not in body, f"{name} in s3://{bucket}/{v['Key']} ({v['VersionId']})"
    summary = {b: f"{len(v)} versions, {sum(1 for x in v if not x.get('IsLatest'))} noncurrent" for b, v in listing.items()}
    print(f"bucket versions after converge: {summary}")
    assert listing, "no bucket at all: the deployment's artifact bucket is missing"


# --- The backup client follows the database server ------------------------------------


def test_backup_client_matches_the_database_major_version():
    server = subprocess.run(["docker", "exec", "e2e-db", "psql", "-tAc", "SHOW server_version_num"],
                            capture_output=True, text=True, check=False)
    if server.returncode != 0:  # psql as root has no role: ask as postgres
        server = subprocess.run(["docker", "exec", "-u", "postgres", "e2e-db", "psql", "-tAc", "SHOW server_version_num"],
                                capture_output=True, text=True, check=True)
    major = int(server.stdout.strip()) // 10000
    client = on_host(f"/usr/lib/postgresql/{major}/bin/pg_dump", "--version").stdout
    assert f" {major}." in client, client
    print(f"database server PostgreSQL {major}; host pg_dump: {client.strip()}")


# --- Re-runs: AWS changing under us ---------------------------------------------------


def test_minor_version_upgrade_by_aws_was_kept():
    """side_effect had 'AWS' patch RDS to <major>.99 before idempotence re-ran site.yml
    (which molecule required to report changed=0): the re-run kept the newer minor."""
    rds = aws("rds")
    version = rds.describe_db_instances(DBInstanceIdentifier=f"{DEPLOYMENT}-mlflow-db")["DBInstances"][0]["EngineVersion"]
    assert version.endswith(".99"), f"the re-run replaced the minor version AWS applied: {version}"
