"""Bad connection settings fail before anything changes, with a message naming the variable.

playbooks/configure.yml checks them before it asks AWS for the servers, and
playbooks/provision.yml checks them in its validation play, before the first AWS call
(the endpoint here is a closed loopback port: an AWS call would fail differently).
"""

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIND_TASK = "TASK [Find the running server instances"
PROVISION_PLAY = "PLAY [Provision the MLflow deployment on AWS]"


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(playbook, extra_vars, path=None):
    env = dict(os.environ)
    env["PATH"] = path or (str(ROOT / ".venv" / "bin") + os.pathsep + env.get("PATH", ""))
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true",
        HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost",
    )
    variables = {
        "mlflow_deployment_name": "validation",
        "mlflow_aws_region": "eu-west-1",
        "mlflow_aws_endpoint_url": f"http://127.0.0.1:{closed_port()}",
        "mlflow_ssh_proxy_command": "",
    }
    variables.update(extra_vars)
    res = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), playbook, "-e", json.dumps(variables)],
        cwd=ROOT, env=env, text=True, capture_output=True, timeout=300,
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


def assert_rejected(playbook, case, first_change):
    """The run fails, names the case's variable and never reaches first_change."""
    extra, variable = CASES[case]
    rc, out = run(playbook, extra)
    assert rc != 0, out[-3000:]
    assert variable in out, f"failure does not name {variable}:\n{out[-3000:]}"
    assert first_change not in out, f"{case} got past validation:\n{out[-3000:]}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_configure_rejects_before_looking_for_hosts(case):
    assert_rejected("playbooks/configure.yml", case, FIND_TASK)


@pytest.mark.parametrize("case", ["proxy_command_quote", "state_dir_relative", "public_hostname_url"])
def test_provision_rejects_before_any_aws_call(case):
    assert_rejected("playbooks/provision.yml", case, PROVISION_PLAY)


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


def test_good_settings_pass_to_the_aws_lookup():
    """The checks above can pass: valid settings get to the first AWS call (which fails
    here, against a closed port)."""
    rc, out = run("playbooks/configure.yml", {"mlflow_public_hostname": "mlflow.example.com", "mlflow_boot_timeout": 600})
    assert rc != 0
    assert FIND_TASK in out, out[-3000:]
