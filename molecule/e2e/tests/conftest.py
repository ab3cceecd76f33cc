"""Fixtures of the end-to-end verifier. Everything here talks to the scenario's own
containers (172.30.254.0/24 on the e2e-net docker network) and to nothing else."""

import base64
import json
import os
import re
import socket
import ssl
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest

ROOT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
INVENTORY = EPHEMERAL / "inventory"
CONTROL = EPHEMERAL / "control"  # mlflow_local_state_dir
EMULATOR = "http://172.30.254.10:5000"
URL = "https://172.30.254.20"  # mlflow_public_hostname
DEPLOYMENT = "e2e"
REGION = "eu-west-1"
HOST = "e2e-ec2"
VENV_BIN = ROOT / ".venv" / "bin"

# The environment molecule gives the playbooks: dummy credentials, nothing reaches AWS.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost,172.30.254.10,172.30.254.20,172.30.254.0/24",
}


class Secret(str):
    """A password that never shows up in a failure report."""

    def __repr__(self):
        return "<secret>"


def secret(name):
    # ansible's password lookup stores "<password> salt=..." when it salts; first word only.
    return Secret((EPHEMERAL / "secrets" / name).read_text().split()[0])


def aws(service):
    return boto3.client(service, endpoint_url=EMULATOR, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def on_host(*argv, check=True):
    """Run a command in the EC2 stand-in (docker exec: inspection only; Ansible used SSH)."""
    res = subprocess.run(["docker", "exec", HOST, *argv], capture_output=True, text=True, check=False)
    if check:
        assert res.returncode == 0, f"{argv}: rc={res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def playbook(*args, timeout=1200):
    """ansible-playbook with the scenario's inventory, as a user runs it; returns (rc, output)."""
    env = dict(os.environ, **AWS_ENV)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    log = CONTROL / f"{Path(args[0]).stem}-{int(time.time())}.log"  # readable while it runs
    with log.open("w+") as out:
        res = subprocess.run(["ansible-playbook", "-i", str(INVENTORY), *args], cwd=ROOT, env=env,
                             stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)
        out.seek(0)
        return res.returncode, out.read()


def recap(output):
    """{host: {'ok': n, 'changed': n, ...}} from a PLAY RECAP."""
    hosts = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        hosts[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return hosts


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def instance():
    reservations = aws("ec2").describe_instances(Filters=[
        {"Name": "tag:mlflow:deployment", "Values": [DEPLOYMENT]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ])["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert len(instances) == 1, instances
    return instances[0]


@pytest.fixture(scope="session")
def client_env():
    """The client settings site.yml prints, with the admin's password from the 'vault'; the
    client's own timeouts and retries (MLFLOW_HTTP_REQUEST_*) stay at MLflow's defaults."""
    ca = CONTROL / "front-door-ca.pem"
    assert ca.is_file(), f"site.yml did not fetch the front door's CA to {ca}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
    env.update({
        "NO_PROXY": "172.30.254.10,172.30.254.20,172.30.254.0/24," + os.environ.get("NO_PROXY", ""),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": URL,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": secret("admin"),
        "MLFLOW_TRACKING_SERVER_CERT_PATH": str(ca),
    })
    return env


def front_door_status(path, auth=True, timeout=10):
    """The HTTP status of a GET through the front door, as the admin (auth) or anonymous;
    None when no HTTP answer came (refused, reset, timed out)."""
    ctx = ssl.create_default_context(cafile=str(CONTROL / "front-door-ca.pem"))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"admin:{secret('admin')}".encode()).decode()
    try:
        with opener.open(urllib.request.Request(URL + path, headers=headers), timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


CLIENT_PRELUDE = """
import json, os, sys, time
from mlflow import MlflowClient
client = MlflowClient()
def emit(**result):
    print("RESULT " + json.dumps(result), flush=True)
"""


def mlflow_client(code, env, *args, timeout=600, **extra_env):
    """Run `code` in a new Python process with the MLflow client set up as a user has it
    (client_env: the front door, the admin, the CA); returns what it emit()ted last."""
    res = subprocess.run([str(VENV_BIN / "python"), "-c", CLIENT_PRELUDE + textwrap.dedent(code), *map(str, args)],
                         env=dict(env, **extra_env), capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    results = [line[len("RESULT "):] for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(results[-1])
