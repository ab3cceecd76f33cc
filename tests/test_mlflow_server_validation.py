"""Bad variables for the mlflow_server role fail in argument validation, before any change,
with a message that names the variable.

The cases run on a tiny play that applies the role in check mode, without facts: nothing
can change, and the results show which tasks ran. One ansible-playbook runs them all, each
case an inventory host of its own (tests/rolecheck.py), and each test checks its own
host's results.
"""

import pytest
from rolecheck import role_batches


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
    # auto workers (1 here) with 3 engines x (pool 1 + overflow 1) need 6.
    ("budget-too-small-for-one-worker", {"mlflow_server_db_connection_budget": 5}, "mlflow_server_db_connection_budget"),
    # MLflow reads 0 as unset, and SQLAlchemy then allows 10.
    ("max-overflow-zero", {"mlflow_server_db_max_overflow": 0}, "mlflow_server_db_max_overflow"),
    ("s3-timeout-negative", {"mlflow_server_s3_timeout": -1}, "mlflow_server_s3_timeout"),
    ("s3-timeout-too-long", {"mlflow_server_s3_timeout": 3600}, "mlflow_server_s3_timeout"),
]

# The first task after validation: it must never run for a bad variable.
FIRST_TASK_AFTER_VALIDATION = "Load the variables of this OS"


GOOD_DB_SERVER_VERSIONS = ["", "15", "17", 17]
# Control cases: good variables, which must get past validation to the OS check.
CONTROLS = {"good": GOOD} | {f"good-db-server-version-{i}": {**GOOD, "mlflow_server_db_server_version": version}
                             for i, version in enumerate(GOOD_DB_SERVER_VERSIONS)} | {
    # The smallest budget auto sizing fits in: 1 worker x 3 engines x (pool 1 + overflow 1).
    "good-smallest-budget": {**GOOD, "mlflow_server_db_connection_budget": 6},
    "good-max-overflow-one": {**GOOD, "mlflow_server_db_max_overflow": 1},
}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, env_with_venv):
    """Every case's host, all in one run."""
    cases = {case: ("mlflow_server", {**GOOD, **extra}) for case, extra, _ in CASES}
    cases |= {case: ("mlflow_server", variables) for case, variables in CONTROLS.items()}
    assert len(cases) == len(CASES) + len(CONTROLS), "two cases have the same id"
    return role_batches(tmp_path_factory, env_with_venv, cases)


def failure_messages(host):
    """The host's failure messages alone: every check's task title names its variable, so the
    host's whole output would name it even when another check failed."""
    return "\n".join(msg for msg, _ in host.failures())


@pytest.mark.parametrize("case,variable", [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_variable_fails_in_validation(hosts, case, variable):
    host = hosts[case]
    assert host.failed, host
    assert variable in failure_messages(host), f"the failure message does not name {variable}:\n{host}"
    assert not host.ran(FIRST_TASK_AFTER_VALIDATION), f"tasks after validation ran:\n{host}"
    assert not host.changed, host
    assert host.stats["changed"] == 0, host


@pytest.mark.parametrize("version", GOOD_DB_SERVER_VERSIONS)
def test_good_db_server_versions_pass_validation(hosts, version):
    """Empty (unknown) and a major version, as a string or a number, pass to the OS check."""
    host = hosts[f"good-db-server-version-{GOOD_DB_SERVER_VERSIONS.index(version)}"]
    assert "mlflow_server supports Debian 12/13 and Amazon Linux 2023" in host.text(), host


def test_good_variables_pass_validation(hosts):
    """Control case: the same play with good variables gets past argument_specs and the
    value checks, and stops only at the OS check (no facts were gathered)."""
    host = hosts["good"]
    assert "mlflow_server supports Debian 12/13 and Amazon Linux 2023" in host.text(), host
    assert not host.ran(FIRST_TASK_AFTER_VALIDATION), host
