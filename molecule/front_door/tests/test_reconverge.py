"""Users as code over time: re-run the users' phase (auth.yml: the mlflow_auth role alone, what
`--tags auth` runs of site.yml after its checks) with one user's password changed (reports
changed, then changed=0), then with a user declared absent. The whole converge's re-run is
molecule's idempotence step."""

import os
import re
import subprocess
import time
from pathlib import Path

import requests
import testinfra.utils.ansible_runner
from conftest import SECRETS, secret

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("test_hosts")

SCENARIO = Path(__file__).resolve().parent.parent
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])


def converge(*extra_vars):
    env = dict(os.environ, ANSIBLE_CONFIG=str(EPHEMERAL / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(SCENARIO / "auth.yml")]
    for var in extra_vars:
        cmd += ["-e", var]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    recap = re.search(r"front_door-a\s*:\s*ok=(\d+)\s+changed=(\d+)", res.stdout)
    assert recap, res.stdout[-2000:]
    return int(recap.group(2)), res.stdout


def test_password_change_then_idempotent_then_user_removal(host, base, ca):
    # testinfra: this file's tests run once per host; the scenario has one.
    old = secret("alice")
    new = old[::-1] + "-rotated"
    (SECRETS / "alice-new").write_text(new + "\n")
    new_var = f"front_door_alice_password={new}"

    changed, out = converge(new_var)
    assert changed >= 1, out[-3000:]
    assert "update password" in out and "create user" not in out, out[-3000:]
    assert requests.get(f"{base}/api/2.0/mlflow/users/current", auth=("alice", new), verify=ca, timeout=30).status_code == 200
    # The old password stops working within MLflow's credential cache TTL
    # (mlflow_server_auth_cache_ttl_seconds, 30 s; test_front_door_limits.py measures the window).
    deadline = time.monotonic() + 30 + 10
    while (status := requests.get(f"{base}/api/2.0/mlflow/users/current", auth=("alice", old),
                                  verify=ca, timeout=30).status_code) != 401 and time.monotonic() < deadline:
        time.sleep(1)
    assert status == 401, status

    changed, out = converge(new_var)
    assert changed == 0, out[-3000:]

    changed, out = converge(new_var, "front_door_temp_state=absent")
    assert changed >= 1 and "delete user" in out, out[-3000:]
    r = requests.get(f"{base}/api/2.0/mlflow/users/get", params={"username": "temp"},
                     auth=("admin", secret("admin")), verify=ca, timeout=30)
    assert r.status_code == 404
