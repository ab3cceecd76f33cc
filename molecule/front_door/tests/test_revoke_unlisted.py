"""Exclusive grants (mlflow_auth_revoke_unlisted, on by default): grants and role assignments
made out of band through the API are listed by a check-mode run and kept by one with the opt-out,
then revoked by a plain run, which a second run leaves alone. Runs after test_reconverge.py."""

import os
import re
import subprocess
import uuid
from pathlib import Path

import requests
import testinfra.utils.ansible_runner
from conftest import EXPERIMENT, MODEL, SECRETS, secret

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("test_hosts")

SCENARIO = Path(__file__).resolve().parent.parent
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])


def run_auth(*args):
    """The mlflow_auth role alone (auth.yml) with the scenario's inventory and the alice password
    test_reconverge.py left in place; returns (changed, stdout)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(EPHEMERAL / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(SCENARIO / "auth.yml"), *args]
    alice_new = SECRETS / "alice-new"
    if alice_new.is_file():
        cmd += ["-e", f"front_door_alice_password={alice_new.read_text().strip()}", "-e", "front_door_temp_state=absent"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    recap = re.search(r"front_door-a\s*:\s*ok=(\d+)\s+changed=(\d+)", res.stdout)
    assert recap, res.stdout[-2000:]
    for name in ("admin", "alice", "bob", "carol", "ops"):
        assert secret(name) not in res.stdout + res.stderr, f"the password of {name} is in the output"
    return int(recap.group(2)), res.stdout


class Api:
    def __init__(self, base, ca, auth):
        self.base, self.ca, self.auth = base, ca, auth

    def call(self, method, path, ok=(200,), **kwargs):
        r = requests.request(method, f"{self.base}{path}", auth=self.auth, verify=self.ca, timeout=60, **kwargs)
        assert r.status_code in ok, (method, path, r.status_code, r.text[:300])
        return r

    def direct(self, user):
        """{(resource_type, pattern): permission} of the user's direct grants."""
        rows = self.call("GET", "/api/3.0/mlflow/users/permissions/list", params={"username": user}).json()["permissions"]
        return {(r["resource_type"], r["resource_pattern"]): r["permission"] for r in rows
                if re.fullmatch(r"__user_\d+__", r["role_name"])}

    def roles(self, user):
        rows = self.call("GET", "/api/3.0/mlflow/users/roles/list", params={"username": user}).json()["roles"]
        return sorted(r["name"] for r in rows if not re.fullmatch(r"__user_\d+__", r["name"]))


def test_undeclared_grants_are_revoked_and_the_opt_out_keeps_them(base, ca, creds):
    admin = Api(base, ca, ("admin", creds["admin"]))
    exp_id = admin.call("GET", "/api/2.0/mlflow/experiments/get-by-name",
                        params={"experiment_name": EXPERIMENT}).json()["experiment"]["experiment_id"]
    readers = next(r for r in admin.call("GET", "/api/3.0/mlflow/roles/list", params={"workspace": "default"}).json()["roles"]
                   if r["name"] == "model-readers")

    # Out of band: an undeclared user with a grant, a declared user with an extra grant and an
    # undeclared role, and MLflow's own MANAGE grant to the creator of an experiment.
    mallory, mallory_password = f"mallory-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.call("POST", "/api/2.0/mlflow/users/create", json={"username": mallory, "password": mallory_password})
    admin.call("POST", "/api/3.0/mlflow/users/permissions/grant", json={
        "username": mallory, "resource_type": "experiment", "resource_id": exp_id, "permission": "READ"})
    admin.call("POST", "/api/3.0/mlflow/users/permissions/grant", json={
        "username": "bob", "resource_type": "registered_model", "resource_id": MODEL, "permission": "MANAGE"})
    admin.call("POST", "/api/3.0/mlflow/roles/assign", json={"username": "bob", "role_id": readers["id"]})
    alice_password = (SECRETS / "alice-new").read_text().strip() if (SECRETS / "alice-new").is_file() else creds["alice"]
    own = f"alice-own-{uuid.uuid4().hex[:8]}"
    own_id = Api(base, ca, ("alice", alice_password)).call(
        "POST", "/api/2.0/mlflow/experiments/create", json={"name": own}).json()["experiment_id"]

    extra = {
        mallory: {("experiment", exp_id): "READ"},
        "bob": {("registered_model", MODEL): "MANAGE"},
        "alice": {("experiment", own_id): "MANAGE"},
    }
    before = {user: admin.direct(user) for user in ("alice", "bob", "carol", mallory, "ops")}
    for user, grants in extra.items():
        assert grants.items() <= before[user].items(), (user, before[user])
    assert admin.roles("bob") == ["model-readers"]

    # Check mode names every one of them and changes nothing.
    changed, out = run_auth("--check")
    assert changed >= 1, out[-3000:]
    for line in (f"revoke {mallory} READ experiment '{EXPERIMENT}' (id {exp_id})",
                 f"revoke bob MANAGE registered_model '{MODEL}'",
                 f"revoke alice MANAGE experiment '{own}' (id {own_id})",
                 "unassign bob from role model-readers"):
        assert line in out, (line, out[-3000:])
    assert {user: admin.direct(user) for user in before} == before
    assert admin.roles("bob") == ["model-readers"]

    # The opt-out keeps them: nothing to do.
    changed, out = run_auth("-e", "mlflow_auth_revoke_unlisted=false")
    assert changed == 0, out[-3000:]
    assert {user: admin.direct(user) for user in before} == before

    # As declared: revoked and reported; the declared grants, admins and accounts stay.
    changed, out = run_auth()
    assert changed >= 1 and "unassign bob from role model-readers" in out, out[-3000:]
    print("revoked by the run:", re.findall(r"(?:revoke|unassign) [^\n'\"]+(?:'[^'\n]*')?[^\n'\"]*", out))
    after = {user: admin.direct(user) for user in before}
    for user, grants in extra.items():
        assert after[user] == {k: v for k, v in before[user].items() if k not in grants}, (user, after[user])
    assert after["alice"][("experiment", exp_id)] == "EDIT" and after["alice"][("registered_model", MODEL)] == "MANAGE"
    assert after["bob"] == {("experiment", exp_id): "READ"}
    assert after["ops"] == before["ops"] and after["carol"] == before["carol"]
    assert admin.roles("bob") == [] and admin.roles("carol") == ["model-readers"]
    users = {u["username"] for u in admin.call("GET", "/api/2.0/mlflow/users/list").json()["users"]}
    assert mallory in users, "an undeclared user is not deleted"
    # mallory signs in still, and sees no longer what she was given out of band.
    r = requests.get(f"{base}/api/2.0/mlflow/experiments/get", params={"experiment_id": exp_id},
                     auth=(mallory, mallory_password), verify=ca, timeout=60)
    assert r.status_code == 403, r.status_code

    changed, out = run_auth()
    assert changed == 0, out[-3000:]
