"""Bad variables for the mlflow_server role fail in argument validation, before any change,
with a message that names the variable.

Each case runs ansible-playbook (from the venv) on a tiny play that applies the role to
localhost in check mode, without facts: nothing can change, and the output shows which
tasks ran.
"""

import re

import pytest
from rolecheck import run_role_check


GOOD = {
    "mlflow_server_db_host": "db.example.internal",
    "mlflow_server_db_password": "a-db-password",
    "mlflow_server_auth_admin_password": "an-admin-password",
}

# (id, extra vars, the variable the message must name)
CASES = [
    ("unknown-backend", {"mlflow_server_backend": "mysql"}, "mlflow_server_backend"),
    ("port-too-high", {"mlflow_server_port": 70000}, "mlflow_server_port"),
    ("port-zero", {"mlflow_server_port": 0}, "mlflow_server_port"),
    ("port-not-int", {"mlflow_server_port": "http"}, "mlflow_server_port"),
    ("malformed-version", {"mlflow_server_version": "3.17"}, "mlflow_server_version"),
    ("version-with-junk", {"mlflow_server_version": "3.17.2; rm -rf /"}, "mlflow_server_version"),
    ("workers-zero", {"mlflow_server_workers": 0}, "mlflow_server_workers"),
    ("workers-negative", {"mlflow_server_workers": -2}, "mlflow_server_workers"),
    ("workers-word", {"mlflow_server_workers": "many"}, "mlflow_server_workers"),
    ("bad-sslmode", {"mlflow_server_db_sslmode": "sometimes"}, "mlflow_server_db_sslmode"),
    ("bad-permission", {"mlflow_server_auth_default_permission": "ALL"}, "mlflow_server_auth_default_permission"),
    ("short-admin-password", {"mlflow_server_auth_admin_password": "short"}, "mlflow_server_auth_admin_password"),
    ("no-db-password", {"mlflow_server_db_password": ""}, "mlflow_server_db_password"),
    ("relative-artifacts", {"mlflow_server_artifacts_destination": "mlartifacts"}, "mlflow_server_artifacts_destination"),
    ("missing-wheelhouse", {"mlflow_server_wheelhouse": "/nonexistent/wheels"}, "mlflow_server_wheelhouse"),
    ("db-server-version-minor", {"mlflow_server_db_server_version": "17.4"}, "mlflow_server_db_server_version"),
    ("db-server-version-word", {"mlflow_server_db_server_version": "latest"}, "mlflow_server_db_server_version"),
    ("db-server-version-prefixed", {"mlflow_server_db_server_version": "pg17"}, "mlflow_server_db_server_version"),
    ("db-server-version-9.6", {"mlflow_server_db_server_version": "9.6"}, "mlflow_server_db_server_version"),
    ("db-server-version-too-old", {"mlflow_server_db_server_version": "9"}, "mlflow_server_db_server_version"),
    ("db-server-version-injection", {"mlflow_server_db_server_version": "17; rm -rf /"}, "mlflow_server_db_server_version"),
    ("db-server-version-list", {"mlflow_server_db_server_version": ["17"]}, "mlflow_server_db_server_version"),
    ("budget-too-small", {"mlflow_server_db_connection_budget": 1, "mlflow_server_workers": 2}, "mlflow_server_db_connection_budget"),
]

# The first task after validation: it must never run for a bad variable.
FIRST_TASK_AFTER_VALIDATION = "Load the variables of this OS"


def failure_messages(out):
    """ansible-core's "[ERROR]: ..." messages alone: every check's task title names its variable,
    so the whole output would name it even when another check failed."""
    return "\n".join(re.findall(r"^\[ERROR\]: (.*?)^Origin: ", out, re.M | re.S))


@pytest.mark.parametrize("extra,variable", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_variable_fails_in_validation(tmp_path, env_with_venv, extra, variable):
    res = run_role_check(tmp_path, env_with_venv, "mlflow_server", {**GOOD, **extra})
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert variable in failure_messages(out), f"the failure message does not name {variable}:\n{out}"
    assert FIRST_TASK_AFTER_VALIDATION not in out, f"tasks after validation ran:\n{out}"
    assert not re.search(r"^changed: \[", out, re.M), out
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0", out), out


@pytest.mark.parametrize("version", ["", "15", "17", 17])
def test_good_db_server_versions_pass_validation(tmp_path, env_with_venv, version):
    """Empty (unknown) and a major version, as a string or a number, pass to the OS check."""
    res = run_role_check(tmp_path, env_with_venv, "mlflow_server", {**GOOD, "mlflow_server_db_server_version": version})
    out = res.stdout + res.stderr
    assert "mlflow_server supports Debian 12/13 and Amazon Linux 2023" in out, out


def test_good_variables_pass_validation(tmp_path, env_with_venv):
    """Control case: the same play with good variables gets past argument_specs and the
    value checks, and stops only at the OS check (no facts were gathered)."""
    res = run_role_check(tmp_path, env_with_venv, "mlflow_server", GOOD)
    out = res.stdout + res.stderr
    assert "mlflow_server supports Debian 12/13 and Amazon Linux 2023" in out, out
    assert FIRST_TASK_AFTER_VALIDATION not in out
