"""Bad connection settings fail before anything changes, with a message naming the variable.

playbooks/configure.yml checks them before it asks AWS for the servers, and
playbooks/provision.yml checks them in its validation play, before the first AWS call
(the endpoint here is a closed loopback port: an AWS call would fail differently).

One run per playbook holds its cases, each an inventory host of its own (tests/rolecheck.py:
the copy of the playbook it runs targets every host instead of localhost), and each test
checks its own host's results.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
from rolecheck import Batches, closed_port, offline_aws_env, playbook_variables, run_playbook_batch

ROOT = Path(__file__).resolve().parent.parent
FIND_TASK = "TASK [Find the running server instances"
PROVISION_PLAY = "PLAY [Provision the MLflow deployment on AWS]"


def run(playbook, extra_vars, path=None):
    res = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), playbook, "-e", json.dumps(playbook_variables(extra_vars, closed_port()))],
        cwd=ROOT, env=offline_aws_env(path), text=True, capture_output=True, timeout=300,
    )
    return res.returncode, res.stdout + res.stderr


CASES = {
    "proxy_command_multiline": ({"mlflow_ssh_proxy_command": "aws ssm start-session\n--target %h"}, "mlflow_ssh_proxy_command"),
    "proxy_command_quote": ({"mlflow_ssh_proxy_command": 'nc "%h" %p'}, "mlflow_ssh_proxy_command"),
    "boot_timeout_too_short": ({"mlflow_boot_timeout": 5}, "mlflow_boot_timeout"),
    "boot_timeout_words": ({"mlflow_boot_timeout": "ten minutes"}, "mlflow_boot_timeout"),
    "state_dir_relative": ({"mlflow_local_state_dir": "keys/here"}, "mlflow_local_state_dir"),
    "public_hostname_url": ({"mlflow_public_hostname": "https://mlflow.example.com"}, "mlflow_public_hostname"),
    "public_hostname_port": ({"mlflow_public_hostname": "mlflow.example.com:443"}, "mlflow_public_hostname"),
    "standin_without_ca": ({"mlflow_database_standin": {"host": "db.test"}}, "mlflow_database_standin"),
    "region_missing": ({"mlflow_aws_region": ""}, "mlflow_aws_region"),
    "deployment_name": ({"mlflow_deployment_name": "Prod_1"}, "mlflow_deployment_name"),
}


PROVISION_CASES = ["proxy_command_quote", "state_dir_relative", "public_hostname_url"]
GOOD_SETTINGS = {"mlflow_public_hostname": "mlflow.example.com", "mlflow_boot_timeout": 600}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """Every case's host: those of configure.yml (and the good settings) in one run of it, those
    of provision.yml in another, with the inventory's groups (empty, as before any host is found)."""
    port = closed_port()
    cases = {f"configure:{case}": ("playbooks/configure.yml", playbook_variables(CASES[case][0], port)) for case in CASES}
    cases["configure:good"] = ("playbooks/configure.yml", playbook_variables(GOOD_SETTINGS, port))
    cases |= {f"provision:{case}": ("playbooks/provision.yml", playbook_variables(CASES[case][0], port)) for case in PROVISION_CASES}
    # What the two playbooks validate with before their first AWS call.
    validation = {"roles": sorted(p.name for p in (ROOT / "roles").glob("aws_*")),
                  "task_files": [ROOT / "playbooks" / "tasks" / "validate_connection.yml"]}
    return Batches(tmp_path_factory, cases, lambda workdir, playbook, members: run_playbook_batch(
        workdir, offline_aws_env(), playbook, members, groups=["mlflow_servers", "mlflow_database_standin"], **validation))


def assert_rejected(host, case, first_change):
    """The case's host fails, its results name the case's variable and never reach first_change."""
    _, variable = CASES[case]
    out = host.text()
    assert host.failed, host
    assert variable in out, f"failure does not name {variable}:\n{host}"
    assert first_change not in out, f"{case} got past validation:\n{host}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_configure_rejects_before_looking_for_hosts(hosts, case):
    assert_rejected(hosts[f"configure:{case}"], case, FIND_TASK)


@pytest.mark.parametrize("case", PROVISION_CASES)
def test_provision_rejects_before_any_aws_call(hosts, case):
    assert_rejected(hosts[f"provision:{case}"], case, PROVISION_PLAY)


def test_session_manager_tools_are_required_by_the_default_transport(tmp_path):
    """The default transport (Session Manager) needs aws + session-manager-plugin on the
    control node: without them, provisioning stops before creating anything and says so."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    default_cmd = ("aws ssm start-session --region eu-west-1 --target %h "
                   "--document-name AWS-StartSSHSession --parameters portNumber=%p")
    path = os.pathsep.join([str(ROOT / ".venv" / "bin"), str(bin_dir), "/usr/bin", "/bin"])
    rc, out = run("playbooks/provision.yml", {"mlflow_ssh_proxy_command": default_cmd}, path=path)
    assert rc != 0, out[-3000:]
    assert "session-manager-plugin" in out and "mlflow_ssh_proxy_command" in out, out[-3000:]
    assert PROVISION_PLAY not in out, out[-3000:]


def test_good_settings_pass_to_the_aws_lookup(hosts):
    """The checks above can pass: valid settings get to the first AWS call (which fails
    here, against a closed port)."""
    host = hosts["configure:good"]
    assert host.failed
    assert FIND_TASK in host.text(), host
