"""The tags of the README's "Tags" table run what it says, and nothing unrelated.

For each documented tag, `ansible-playbook site.yml --list-tasks --tags <tag>` (the repo's
inventory; no host is touched) must list the roles and tasks of that phase, none of another
phase's, and, whatever the tag, the validation and the discovery every phase needs (tagged
`always`), the AWS inputs checked first. The table and the playbooks name the same tags.
"""

import functools
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
AWS_ROLES = {"aws_network", "aws_security_groups", "aws_artifact_bucket", "aws_rds_postgres",
             "aws_iam_instance_role", "aws_ec2_host"}
HOST_ROLES = {"host_baseline", "mlflow_server", "mlflow_proxy", "mlflow_auth"}

# Listed under every tag (always): the checks of every input, then what the phases need.
ALWAYS = [
    "Validate the inputs of each AWS role",
    "Check the connection settings",
    "Find the running server instances of deployment {{ mlflow_deployment_name }}",
    "Add the servers to group mlflow_servers (SSH as the admin user through mlflow_ssh_proxy_command)",
    "Wait until the instance answers over SSH (a new instance is still booting)",
    "Gather facts",
    "Read the database credentials from Secrets Manager",
    "mlflow_server : Check the values of the variables",
    "mlflow_proxy : Check the values of the variables",
    "mlflow_auth : Check the values of the variables",
    "host_baseline : Check the values of the variables",
    "Check the OS is supported and load its variables",
    "Show the URL, the CA and the client settings",
]


def names(role, tasks_file):
    """The task names a tasks file contributes to --list-tasks (blocks flattened, their rescue
    tasks not listed; an include is listed itself, not what it includes)."""
    def walk(tasks):
        for task in tasks or []:
            if "block" in task:
                yield from walk(task["block"])
            elif "name" in task:
                yield task["name"]
    return [f"{role} : {n}" for n in walk(yaml.safe_load((ROOT / "roles" / role / "tasks" / tasks_file).read_text()))]


SERVER_INSTALL = names("mlflow_server", "install.yml") + \
    ["mlflow_server : Choose the PostgreSQL client for the database server's version"]
SERVER_CONFIGURE = names("mlflow_server", "configure.yml")
SERVER_MIGRATE = names("mlflow_server", "database.yml")
SERVER_SERVICE = names("mlflow_server", "service.yml") + names("mlflow_server", "gc.yml") + names("mlflow_server", "health.yml")
BASELINE = {
    "packages": ["host_baseline : Install packages", "Refresh the apt cache when it is empty or older than an hour"],
    "ca": names("host_baseline", "ca_certificates.yml"),
    "swap": names("host_baseline", "swap.yml"),
    "time": names("host_baseline", "time_sync.yml"),
    "journal": names("host_baseline", "journald.yml"),
    "updates": ["host_baseline : Configure automatic security updates"],
}
PROXY = {
    "install": ["mlflow_proxy : Install nginx"],
    "tls": ["mlflow_proxy : TLS directory", "mlflow_proxy : Self-signed certificate", "mlflow_proxy : Provided certificate"],
    "configure": ["mlflow_proxy : SELinux"] + names("mlflow_proxy", "nginx.yml"),
}
AUTH = {part: names("mlflow_auth", f"{part}.yml") for part in ("roles", "users", "permissions")}


def phase(roles, listed, others):
    """What a tag runs: the roles with tasks of their own listed, tasks that must be listed,
    and tasks of other phases that must not be."""
    return {"roles": set(roles), "listed": list(listed), "absent": [t for t in others if t not in listed]}


def role_phases(parts, prefix):
    everything = [t for tasks in parts.values() for t in tasks]
    return {f"{prefix}_{part}": phase({prefix}, tasks, everything) for part, tasks in parts.items()}


ALL_SERVER = SERVER_INSTALL + SERVER_CONFIGURE + SERVER_MIGRATE + SERVER_SERVICE
EXPECTED = {
    "provision": phase(AWS_ROLES, ["aws_network : Find or create the network", "aws_ec2_host : Launch the host"],
                       ["host_baseline : Install packages", *SERVER_INSTALL]),
    "network": phase({"aws_network"}, ["aws_network : Find or create the network"], ["aws_security_groups : Create the security groups"]),
    "security_groups": phase({"aws_network", "aws_security_groups"}, ["aws_security_groups : Create the security groups"], []),
    "bucket": phase({"aws_artifact_bucket"}, ["aws_artifact_bucket : Create and secure the bucket"], []),
    "database": phase({"aws_network", "aws_security_groups", "aws_rds_postgres"}, ["aws_rds_postgres : Create the database"], []),
    "iam": phase({"aws_artifact_bucket", "aws_iam_instance_role"}, ["aws_iam_instance_role : Create the role and its instance profile"], []),
    "ec2": phase(AWS_ROLES, ["aws_ec2_host : Launch the host"], []),
    "configure": phase(HOST_ROLES | {"postgres_standin"}, ["host_baseline : Install packages", *ALL_SERVER],
                       ["aws_network : Find or create the network"]),
    "baseline": phase({"host_baseline"}, [t for tasks in BASELINE.values() for t in tasks], ALL_SERVER),
    "server": phase({"mlflow_server"}, ALL_SERVER, ["host_baseline : Install packages", "mlflow_proxy : Install nginx"]),
    "mlflow_server_install": phase({"mlflow_server"}, SERVER_INSTALL, ALL_SERVER),
    "mlflow_server_configure": phase({"mlflow_server"}, SERVER_CONFIGURE, ALL_SERVER),
    "mlflow_server_migrate": phase({"mlflow_server"}, SERVER_MIGRATE + SERVER_INSTALL[-1:], ALL_SERVER),
    "mlflow_server_service": phase({"mlflow_server"}, SERVER_SERVICE, ALL_SERVER),
    "proxy": phase({"mlflow_proxy"}, [t for tasks in PROXY.values() for t in tasks], ALL_SERVER),
    "auth": phase({"mlflow_auth"}, ["mlflow_auth : Wait for the MLflow server"] + [t for tasks in AUTH.values() for t in tasks],
                  ALL_SERVER),
    **role_phases(BASELINE, "host_baseline"),
    **role_phases(PROXY, "mlflow_proxy"),
    **{tag: dict(spec, listed=spec["listed"] + ["mlflow_auth : Wait for the MLflow server"])
       for tag, spec in role_phases(AUTH, "mlflow_auth").items()},
}

_TASK = re.compile(r"^\s{6}(?:mlflow_aws\.mlflow\.(?P<role>\w+) : )?(?P<name>.*?)\tTAGS: \[(?P<tags>[^\]]*)\]$")


@functools.cache
def list_tasks(tags, env_items):
    res = subprocess.run(["ansible-playbook", "site.yml", "--list-tasks", "--tags", tags],
                         cwd=ROOT, env=dict(env_items), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    tasks = []
    for line in res.stdout.splitlines():
        m = _TASK.match(line)
        if m:
            role, name = m["role"], m["name"]
            tasks.append({"role": role, "name": f"{role} : {name}" if role else name,
                          "tags": {t.strip() for t in m["tags"].split(",") if t.strip()}})
    return tasks


@pytest.fixture(scope="module")
def listed(env_with_venv):
    """--list-tasks per tag, all listed at once (a few seconds each)."""
    env = tuple(sorted(env_with_venv.items()))
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda tag: list_tasks(tag, env), sorted(EXPECTED)))
    return lambda tag: list_tasks(tag, env)


def readme_tags():
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Tags\n(.*?)(?=^## )", text, re.M | re.S)
    assert section, "README.md has no '## Tags' section"
    return re.findall(r"^\| `([a-z0-9_]+)` \|", section.group(1), re.M)


def playbook_tags(playbook, env):
    res = subprocess.run(["ansible-playbook", playbook, "--list-tags"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    found = set()
    for group in re.findall(r"TASK TAGS: \[([^\]]*)\]", res.stdout):
        found |= {t.strip() for t in group.split(",") if t.strip()}
    return found - {"always"}


def test_readme_documents_every_tag_and_only_those(env_with_venv):
    documented = readme_tags()
    assert len(documented) == len(set(documented)), f"a tag is documented twice: {documented}"
    used = playbook_tags("site.yml", env_with_venv)
    assert set(documented) == used, (
        f"in README.md but not in site.yml: {sorted(set(documented) - used)}; "
        f"in site.yml but not in README.md: {sorted(used - set(documented))}"
    )
    assert set(documented) == set(EXPECTED), "every documented tag needs its expectations here"


def test_configure_knows_the_provision_tags(env_with_venv):
    """configure.yml skips finding the servers when only provision.yml's tags are asked for:
    its list must be exactly those."""
    plays = yaml.safe_load((ROOT / "playbooks" / "configure.yml").read_text())
    listed_in_configure = set(plays[0]["vars"]["_mlflow_provision_tags"])
    site = yaml.safe_load((ROOT / "site.yml").read_text())
    provision_tag = {t for p in site if p["ansible.builtin.import_playbook"].endswith("provision.yml") for t in p["tags"]}
    assert listed_in_configure == playbook_tags("playbooks/provision.yml", env_with_venv) | provision_tag


@pytest.mark.parametrize("tag", sorted(EXPECTED))
def test_tag_runs_its_phase_only(tag, listed):
    tasks = listed(tag)
    expected = EXPECTED[tag]
    names = [t["name"] for t in tasks]
    # The roles that run something beyond their always-tasks (checks, the OS's variables).
    working = {t["role"] for t in tasks if t["role"] and "always" not in t["tags"]}
    assert working == expected["roles"], f"--tags {tag} runs tasks of {sorted(working)}, expected {sorted(expected['roles'])}"
    missing = [n for n in expected["listed"] if n not in names]
    assert not missing, f"--tags {tag} does not run: {missing}"
    unrelated = [n for n in expected["absent"] if n in names]
    assert not unrelated, f"--tags {tag} also runs: {unrelated}"


@pytest.mark.parametrize("tag", sorted(EXPECTED))
def test_tag_still_validates_first(tag, listed):
    names = [t["name"] for t in listed(tag)]
    missing = [n for n in ALWAYS if n not in names]
    assert not missing, f"--tags {tag} skips: {missing}"
    assert names[0] == "Validate the inputs of each AWS role", names[:3]
    # Each host role checks its variables before its first task of the phase.
    for role in HOST_ROLES:
        own = [i for i, t in enumerate(listed(tag)) if t["role"] == role]
        checks = [i for i in own if names[i].startswith(f"{role} : Check ")]
        work = [i for i in own if "always" not in listed(tag)[i]["tags"]]
        if work:
            assert max(checks) < min(work), f"--tags {tag}: {role} works before its checks"
