"""Verify the collection scenario: the two roles' effects on the host, and that the built
and installed artifact, not this repository, provided them.

The proof of origin, on the control node:
- every ansible-playbook run of this scenario logged where it loaded mlflow_aws.mlflow
  from (ANSIBLE_LOG_PATH at log verbosity 4): only ever WORKDIR/collections;
- with the scenario's environment, the collection exists once, in WORKDIR/collections,
  and its files match the artifact's manifest (ansible-galaxy collection verify);
- a negative control: the same playbook with an empty collections path instead cannot
  find the roles, so nothing else on the control node (sys.path, default roles_path,
  paths next to the playbook) can have provided them.
"""

import json
import os
import re
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import requests
import testinfra.utils.ansible_runner
import yaml

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("test_hosts")

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).resolve()
WORKDIR = Path(os.environ["COLLECTION_WORKDIR"]).resolve()
INSTALL = WORKDIR / "collections"
INSTALLED = INSTALL / "ansible_collections" / "mlflow_aws" / "mlflow"
PLAYBOOK = WORKDIR / "playbook" / "site.yml"
CA_FILE = WORKDIR / "playbook" / "mlflow-ca.crt"
CONTAINER = os.environ.get("MOLECULE_SCENARIO_NAME", "collection") + "-a"
SERVER_NAME = "mlflow.collection.test"
GALAXY = yaml.safe_load((PROJECT / "galaxy.yml").read_text())


def ansible(*cmd, env=None):
    return subprocess.run(list(cmd), env=env or os.environ, cwd=WORKDIR, capture_output=True, text=True, check=False)


# ---- where the roles came from (control node) -----------------------------------


def test_the_playbook_and_the_install_are_outside_the_repository():
    for path in (WORKDIR, PLAYBOOK, INSTALLED):
        assert not path.resolve().is_relative_to(PROJECT), path
    # The playbook has no group_vars, host_vars or collections beside it.
    assert sorted(p.name for p in PLAYBOOK.parent.iterdir()) == ["mlflow-ca.crt", "site.yml"]
    assert os.environ["ANSIBLE_COLLECTIONS_PATH"] == str(INSTALL)
    assert Path(os.environ["ANSIBLE_CONFIG"]).resolve() != PROJECT / "ansible.cfg"


def test_the_effective_configuration_reaches_only_the_install():
    res = ansible("ansible-config", "dump", "--format", "json")
    assert res.returncode == 0, res.stderr
    # Settings, then sections such as {"GALAXY_SERVERS": {...}}.
    settings = {s["name"]: s for s in json.loads(res.stdout) if "name" in s}
    assert settings["COLLECTIONS_PATHS"]["value"] == [str(INSTALL)]
    assert settings["CONFIG_FILE"]["value"] == os.environ["ANSIBLE_CONFIG"]
    roles_path = settings["DEFAULT_ROLES_PATH"]
    assert roles_path["origin"] == "default", roles_path
    for d in roles_path["value"]:
        assert not Path(d).resolve().is_relative_to(PROJECT), d
    assert ".collections" not in Path(os.environ["ANSIBLE_CONFIG"]).read_text()


def test_every_playbook_run_loaded_the_collection_from_the_install():
    log = (WORKDIR / "ansible.log").read_text()
    loads = re.findall(r"Loading collection mlflow_aws\.mlflow from (\S+)", log)
    # At least the converge (molecule test: syntax, converge and idempotence, a process each).
    assert loads, "no ansible-playbook run loaded mlflow_aws.mlflow"
    assert set(loads) == {str(INSTALLED)}, loads
    configs = set(re.findall(r"Using (\S+) as config file", log))
    assert configs == {os.environ["ANSIBLE_CONFIG"]}, configs


def test_only_the_artifact_provides_the_collection():
    res = ansible("ansible-galaxy", "collection", "list", "mlflow_aws.mlflow", "--format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {
        str(INSTALL / "ansible_collections"): {"mlflow_aws.mlflow": {"version": GALAXY["version"]}}
    }


def test_the_install_is_the_unmodified_artifact():
    res = ansible("ansible-galaxy", "collection", "verify", "--offline", "mlflow_aws.mlflow", "-p", str(INSTALL))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "internally consistent with its manifest" in res.stdout
    # Built, not copied: a manifest instead of galaxy.yml, and none of the repository's own files.
    assert (INSTALLED / "MANIFEST.json").is_file() and not (INSTALLED / "galaxy.yml").exists()
    for left_out in ("molecule", "tests", "inventory", "group_vars", ".collections", "scripts", "ansible.cfg"):
        assert not (INSTALLED / left_out).exists(), left_out


def test_without_the_install_the_roles_are_not_found(tmp_path):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path))
    env.pop("ANSIBLE_LOG_PATH", None)
    res = ansible("ansible-playbook", "--syntax-check", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(PLAYBOOK), env=env)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "mlflow_aws.mlflow.host_baseline" in out and "was not found" in out, out[-2000:]


# ---- what the roles did (on the host, and from the network) -------------------------


@pytest.fixture(scope="module")
def ip():
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", CONTAINER],
        check=True, capture_output=True, text=True,
    ).stdout
    return next(n["IPAddress"] for n in json.loads(out).values() if n.get("IPAddress"))


def test_nginx_listens_with_tls_on_443(host, ip):
    listening = host.check_output("ss -Hltn | awk '{print $4}'").split()
    assert "0.0.0.0:443" in listening and "0.0.0.0:80" in listening, listening
    assert host.run("nginx -t").rc == 0
    # The certificate chains to the CA the play fetched next to the playbook and names the host.
    ctx = ssl.create_default_context(cafile=str(CA_FILE))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((ip, 443), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        sans = [v for _, v in tls.getpeercert()["subjectAltName"]]
    assert SERVER_NAME in sans and ip in sans, sans


def test_the_proxy_answers_as_configured(ip):
    # No credentials: 401 from nginx itself; unknown Host: 403; port 80 only redirects.
    r = requests.get(f"https://{ip}/", verify=str(CA_FILE), timeout=10)
    assert r.status_code == 401
    assert "max-age=31536000" in r.headers.get("Strict-Transport-Security", "")
    r = requests.get(f"https://{ip}/", headers={"Host": "other.test"}, verify=str(CA_FILE), timeout=10)
    assert r.status_code == 403
    r = requests.get(f"http://{ip}/health", allow_redirects=False, timeout=10)
    assert r.status_code == 301 and r.headers["Location"] == f"https://{ip}/health"


def test_tls_keys_are_private(host):
    for key in ("/etc/nginx/mlflow-tls/server.key", "/etc/nginx/mlflow-tls/ca.key"):
        f = host.file(key)
        assert f.user == "root" and f.mode == 0o600, key


def test_chrony_runs_without_clock_control_or_servers(host):
    svc = host.service("chrony")
    assert svc.is_enabled and svc.is_running
    assert "-x" in host.file("/etc/default/chrony").content_string
    assert "server " not in host.file("/etc/chrony/chrony.conf").content_string


def test_journal_is_persistent_and_capped(host):
    conf = host.file("/etc/systemd/journald.conf.d/60-host-baseline.conf").content_string
    assert "Storage=persistent" in conf and "SystemMaxUse=512M" in conf
    assert host.file("/var/log/journal").is_directory


def test_security_updates_enabled(host):
    assert host.package("unattended-upgrades").is_installed
    assert 'APT::Periodic::Unattended-Upgrade "1";' in host.check_output("apt-config dump")


def test_no_swap_file_was_made(host):
    assert not host.file("/swapfile").exists
