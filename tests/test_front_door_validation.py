"""Bad variables for the front door roles (mlflow_proxy, mlflow_auth) fail in validation,
before any change, with a message that names the variable.

The cases run on a tiny play that applies one role in check mode, without facts: nothing
can change, and the results show which tasks ran. One ansible-playbook per role runs all
its cases, each case an inventory host of its own (tests/rolecheck.py), and each test
checks its own host's results.
"""

import pytest
from rolecheck import role_batches


GOOD = {
    "mlflow_proxy": {"mlflow_proxy_server_names": ["mlflow.example.com", "10.0.0.5"]},
    "mlflow_auth": {
        "mlflow_auth_admin_password": "an-admin-password",
        "mlflow_auth_roles": [{"name": "readers", "permissions": [{"resource_type": "experiment", "permission": "READ"}]}],
        "mlflow_auth_users": [{"name": "alice", "password": "alice-password-1", "roles": ["readers"]}],
        "mlflow_auth_experiment_permissions": [{"user": "alice", "experiment": "churn", "permission": "EDIT"}],
    },
}

# The first task after validation: it must never run for a bad variable.
FIRST_TASK_AFTER_VALIDATION = {
    "mlflow_proxy": "Load the variables of this OS",
    "mlflow_auth": "Wait for the MLflow server",
}

USER = {"name": "bob", "password": "bob-password-12"}

# (id, role, extra vars, the variable the message must name)
CASES = [
    ("proxy-https-port-too-high", "mlflow_proxy", {"mlflow_proxy_https_port": 70000}, "mlflow_proxy_https_port"),
    ("proxy-https-port-zero", "mlflow_proxy", {"mlflow_proxy_https_port": 0}, "mlflow_proxy_https_port"),
    ("proxy-http-port-word", "mlflow_proxy", {"mlflow_proxy_http_port": "http"}, "mlflow_proxy_http_port"),
    ("proxy-same-ports", "mlflow_proxy", {"mlflow_proxy_http_port": 443}, "mlflow_proxy_http_port"),
    ("proxy-upstream-port", "mlflow_proxy", {"mlflow_proxy_upstream_port": 99999}, "mlflow_proxy_upstream_port"),
    ("proxy-body-size-malformed", "mlflow_proxy", {"mlflow_proxy_client_max_body_size": "2 GB"}, "mlflow_proxy_client_max_body_size"),
    ("proxy-body-size-injection", "mlflow_proxy", {"mlflow_proxy_client_max_body_size": "1g; return 200"},
     "mlflow_proxy_client_max_body_size"),
    ("proxy-no-names", "mlflow_proxy", {"mlflow_proxy_server_names": []}, "mlflow_proxy_server_names"),
    ("proxy-name-with-space", "mlflow_proxy", {"mlflow_proxy_server_names": ["a b"]}, "mlflow_proxy_server_names"),
    ("proxy-tls-1.1", "mlflow_proxy", {"mlflow_proxy_tls_protocols": ["TLSv1.1", "TLSv1.2"]}, "mlflow_proxy_tls_protocols"),
    ("proxy-bad-tls-mode", "mlflow_proxy", {"mlflow_proxy_tls_mode": "letsencrypt"}, "mlflow_proxy_tls_mode"),
    ("proxy-provided-without-files", "mlflow_proxy", {"mlflow_proxy_tls_mode": "provided"}, "mlflow_proxy_tls_cert_src"),
    ("proxy-ciphers-with-spaces", "mlflow_proxy", {"mlflow_proxy_tls_ciphers": "HIGH; ssl off"}, "mlflow_proxy_tls_ciphers"),
    ("proxy-timeout-zero", "mlflow_proxy", {"mlflow_proxy_artifact_timeout": 0}, "mlflow_proxy_artifact_timeout"),
    ("proxy-api-body-size-malformed", "mlflow_proxy", {"mlflow_proxy_api_max_body_size": "16 MB"},
     "mlflow_proxy_api_max_body_size"),
    ("proxy-api-body-size-unlimited", "mlflow_proxy", {"mlflow_proxy_api_max_body_size": "0"}, "mlflow_proxy_api_max_body_size"),
    ("proxy-api-body-size-gigabytes", "mlflow_proxy", {"mlflow_proxy_api_max_body_size": "2g"}, "mlflow_proxy_api_max_body_size"),
    ("proxy-api-body-size-injection", "mlflow_proxy", {"mlflow_proxy_api_max_body_size": "1m; return 200"},
     "mlflow_proxy_api_max_body_size"),
    ("proxy-client-timeout-zero", "mlflow_proxy", {"mlflow_proxy_client_timeout": 0}, "mlflow_proxy_client_timeout"),
    ("proxy-auth-cache-negative", "mlflow_proxy", {"mlflow_proxy_auth_cache_seconds": -1}, "mlflow_proxy_auth_cache_seconds"),
    ("proxy-auth-cache-too-long", "mlflow_proxy", {"mlflow_proxy_auth_cache_seconds": 86400}, "mlflow_proxy_auth_cache_seconds"),
    ("proxy-auth-cache-word", "mlflow_proxy", {"mlflow_proxy_auth_cache_seconds": "half a minute"},
     "mlflow_proxy_auth_cache_seconds"),
    ("proxy-auth-rate-zero", "mlflow_proxy", {"mlflow_proxy_auth_rate_per_minute": 0}, "mlflow_proxy_auth_rate_per_minute"),
    ("proxy-auth-rate-nginx-syntax", "mlflow_proxy", {"mlflow_proxy_auth_rate_per_minute": "10r/s"},
     "mlflow_proxy_auth_rate_per_minute"),
    ("proxy-auth-burst-negative", "mlflow_proxy", {"mlflow_proxy_auth_burst": -5}, "mlflow_proxy_auth_burst"),
    ("auth-no-admin-password", "mlflow_auth", {"mlflow_auth_admin_password": ""}, "mlflow_auth_admin_password"),
    ("auth-bad-url", "mlflow_auth", {"mlflow_auth_api_url": "127.0.0.1:5000"}, "mlflow_auth_api_url"),
    ("auth-user-without-password", "mlflow_auth", {"mlflow_auth_users": [{"name": "bob"}]}, "mlflow_auth_users"),
    ("auth-user-short-password", "mlflow_auth", {"mlflow_auth_users": [{"name": "bob", "password": "short"}]},
     "mlflow_auth_users"),
    ("auth-user-bad-state", "mlflow_auth", {"mlflow_auth_users": [dict(USER, state="gone")]}, "mlflow_auth_users"),
    ("auth-duplicate-user", "mlflow_auth", {"mlflow_auth_users": [USER, USER]}, "mlflow_auth_users"),
    ("auth-unknown-permission", "mlflow_auth",
     {"mlflow_auth_experiment_permissions": [{"user": "alice", "experiment": "churn", "permission": "WRITE"}]},
     "mlflow_auth_experiment_permissions"),
    ("auth-no-permissions-is-not-grantable", "mlflow_auth",
     {"mlflow_auth_registered_model_permissions": [{"user": "alice", "model": "m", "permission": "NO_PERMISSIONS"}]},
     "mlflow_auth_registered_model_permissions"),
    ("auth-grant-without-permission", "mlflow_auth",
     {"mlflow_auth_experiment_permissions": [{"user": "alice", "experiment": "churn"}]},
     "mlflow_auth_experiment_permissions"),
    ("auth-grant-to-removed-user", "mlflow_auth",
     {"mlflow_auth_users": [{"name": "alice", "state": "absent"}]}, "mlflow_auth_experiment_permissions"),
    ("auth-undeclared-role", "mlflow_auth",
     {"mlflow_auth_users": [dict(USER, roles=["admins"])]}, "mlflow_auth_users"),
    ("auth-role-unknown-resource-type", "mlflow_auth",
     {"mlflow_auth_roles": [{"name": "r", "permissions": [{"resource_type": "run", "permission": "READ"}]}]},
     "mlflow_auth_roles"),
    ("auth-role-workspace-read", "mlflow_auth",
     {"mlflow_auth_roles": [{"name": "r", "permissions": [{"resource_type": "workspace", "permission": "READ"}]}]},
     "mlflow_auth_roles"),
    ("auth-demote-acting-admin", "mlflow_auth",
     {"mlflow_auth_users": [{"name": "admin", "password": "an-admin-password", "admin": False}]}, "mlflow_auth_users"),
]




# Control cases: good variables, which must get past validation.
CONTROLS = {
    # Past argument_specs and the value checks, stopped only at the OS check (no facts were gathered).
    "good-proxy": ("mlflow_proxy", GOOD["mlflow_proxy"]),
    # Validation passes and the role goes on to wait for the server (which is not there: a 1 s timeout).
    "good-auth": ("mlflow_auth", GOOD["mlflow_auth"] | {"mlflow_auth_wait_timeout": 1, "mlflow_auth_api_url": "http://127.0.0.1:9"}),
}
PASSWORDS = ("alice-password-1", "bob-password-12")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, env_with_venv):
    """Every case's host, the cases of one role in one run."""
    cases = {case: (role, {**GOOD[role], **extra}) for case, role, extra, _ in CASES} | CONTROLS
    assert len(cases) == len(CASES) + len(CONTROLS), "two cases have the same id"
    return role_batches(tmp_path_factory, env_with_venv, cases)


@pytest.mark.parametrize("case,role,variable", [(c[0], c[1], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_variable_fails_in_validation(hosts, case, role, variable):
    host = hosts[case]
    assert host.failed, host
    assert variable in host.text(), f"the failure does not name {variable}:\n{host}"
    assert not host.ran(FIRST_TASK_AFTER_VALIDATION[role]), f"tasks after validation ran:\n{host}"
    assert not host.changed, host
    assert not any(p in host.batch.output for p in PASSWORDS), "a password leaked into the output"


def test_good_proxy_variables_pass_validation(hosts):
    """Control case: good variables get past argument_specs and the value checks, and stop
    only at the OS check (no facts were gathered)."""
    host = hosts["good-proxy"]
    assert "mlflow_proxy supports Debian 12/13 and Amazon Linux 2023" in host.text(), host
    assert not host.ran(FIRST_TASK_AFTER_VALIDATION["mlflow_proxy"]), host


def test_good_auth_variables_pass_validation(hosts):
    """Control case: validation passes and the role goes on to wait for the server (which is
    not there: a 1 s timeout)."""
    host = hosts["good-auth"]
    assert host.ran(FIRST_TASK_AFTER_VALIDATION["mlflow_auth"]), host
    assert "alice-password-1" not in host.batch.output
