"""Apply one role to localhost in check mode, without facts, with given variables:
the validation tests use it to show that a bad variable fails before anything changes.

run_role_check runs one case (one ansible-playbook). Most cases run batched instead
(run_role_batch, run_playbook_batch, Batches): one ansible-playbook for all the cases of a
role (or a playbook), each case an inventory host of its own whose host variables are the
case's variables, every host failing on its own (no any_errors_fatal). The callback plugin
tests/callback_plugins/case_results.py writes what each host's tasks did, so each case is
judged on its own host's results (HostRun), as it was on its own run's output before.

What a batch changes for a case, and how it is kept equal to a run of its own:
- The variables are host variables instead of extra vars: they lose to role vars/,
  set_fact and task vars, which extra vars beat. No case sets such a variable (checked
  when this was written); a case that did would fail for another reason or not at all,
  which the tests' per-case checks report.
- The host is not alone in its play: what a role derives from the play's hosts takes the
  value a play of one host gives it (SINGLE_HOST_VALUES, checked against the role's vars/
  on every batch: a new such variable stops the batch with a message), and the validation
  tasks must not run_once or delegate_to (checked on every batch, the same way).
- The host's name is the case's id, sanitized (host_names): a DNS label, since a default
  such as postgres_standin_server_names is [inventory_hostname].
- Each host has ansible_connection local and ansible_python_interpreter
  ansible_playbook_python: the venv's Python, which interpreter discovery found for
  localhost in a run of its own (and which inventory/hosts.yml gives localhost).
"""

import json
import os
import re
import socket
import subprocess
import textwrap
from functools import cached_property
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CALLBACKS = Path(__file__).resolve().parent / "callback_plugins"

PLAYBOOK = textwrap.dedent(
    """\
    ---
    - name: Apply {role} with the variables under test
      hosts: {hosts}
      connection: local
      gather_facts: false
      roles:
        - role: mlflow_aws.mlflow.{role}
    """
)

# Measured on 2 shared cores (batches of 9 to 63 hosts, forks 1 to 20): the CPU time varies
# little (forks 1 costs most: the main process polls through the longest run), the wall time
# falls up to 4 forks; 8 was as cheap as any.
FORKS = 8

# Variables of a role's vars/ computed from the play's host list, pinned (extra vars beat
# role vars) to what they are in a play of one host, a run of its own.
SINGLE_HOST_VALUES = {
    "mlflow_server": {"_mlflow_server_count": 1},  # ansible_play_hosts_all | length
}
PER_PLAY = re.compile(r"\b(ansible_play_hosts|ansible_play_hosts_all|ansible_play_batch|play_hosts)\b|\bgroups\s*[\[.|]")
PER_PLAY_KEYWORDS = ("run_once", "delegate_to", "any_errors_fatal", "max_fail_percentage", "serial", "throttle")


def closed_port():
    """A loopback port nothing listens on: an AWS call there fails at once, differently from a
    validation failure."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_aws_env(path=None):
    """The venv's ansible, dummy AWS credentials, no config files, instance metadata off and a
    dead proxy: nothing these runs do can reach AWS."""
    env = dict(os.environ)
    env["PATH"] = path or (str(ROOT / ".venv" / "bin") + os.pathsep + env.get("PATH", ""))
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true",
        HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost",
    )
    return env


def playbook_variables(extra_vars, port):
    """Good connection settings for provision.yml / configure.yml, the endpoint on `port`, with
    the case's variables over them. Direct SSH: the Session Manager tools, checked in the same
    validation play, are covered by their own test."""
    return {
        "mlflow_deployment_name": "validation",
        "mlflow_aws_region": "eu-west-1",
        "mlflow_aws_endpoint_url": f"http://127.0.0.1:{port}",
        "mlflow_ssh_proxy_command": "",
    } | extra_vars


def run_role_check(tmp_path, env, role, variables):
    play = tmp_path / "play.yml"
    play.write_text(PLAYBOOK.format(role=role, hosts="localhost"))
    varsfile = tmp_path / "vars.json"
    varsfile.write_text(json.dumps(variables))
    return subprocess.run(
        ["ansible-playbook", "--check", "-i", "localhost,", str(play), "-e", f"@{varsfile}"],
        cwd=ROOT,
        env={**env, "ANSIBLE_FORCE_COLOR": "0"},
        text=True,
        capture_output=True,
        timeout=300,
    )


def host_names(case_ids):
    """{case id: inventory host name}: a DNS label (letters, digits, inner hyphens, at most 63
    characters) numbered so that two ids that sanitize alike stay two hosts."""
    names = {}
    for number, case in enumerate(case_ids):
        label = re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")
        names[case] = f"case{number:03d}-{label}"[:63].rstrip("-")
    return names


class HostRun:
    """One case's host in a batch: its task results in order and its recap counts."""

    def __init__(self, batch, case, host, data):
        self.batch, self.case, self.host = batch, case, host
        self.results = data.get("results", [])
        self.stats = data.get("stats")

    @property
    def failed(self):
        return bool(self.stats) and (self.stats["failures"] > 0 or self.stats["unreachable"] > 0)

    @property
    def changed(self):
        return (self.stats or {}).get("changed", 0) > 0 or any(r["status"] == "changed" for r in self.results)

    def failures(self):
        """(message, where the task lives) of each failure, in order (a loop's failed items before the
        loop's own); the message is the error the default output shows ("[ERROR]: ..."), else the result's."""
        return [(r.get("error") or r["msg"], r["origin"]) for r in self.results if r["status"] in ("failed", "unreachable")]

    def ran(self, task):
        """Whether a task whose name (role prefix included) contains `task` reached this host."""
        return any(task in r["task"] for r in self.results)

    def text(self):
        """The host's results as lines like the default output's: plays, tasks, statuses and messages."""
        lines, play = [], None
        for r in self.results:
            if r["play"] != play:
                play = r["play"]
                lines.append(f"PLAY [{play}]")
            item = f" (item={r['item']})" if "item" in r else ""
            lines.append(f"TASK [{r['task']}] {r['status']}{item}: {r['msg']}".rstrip())
            if r.get("error"):
                lines.append(f"[ERROR]: {r['error']}")
            if r["status"] == "failed":
                lines.append(f"Origin: {r['origin']}")
        return "\n".join(lines)

    def __str__(self):
        return (f"case {self.case} (host {self.host}) in `{self.batch.command}`, rc {self.batch.returncode}, "
                f"recap {self.stats}:\n{self.text()}\n--- the run's stderr:\n{self.batch.stderr[-4000:]}")


class Batch:
    """The result of one batched ansible-playbook run."""

    def __init__(self, command, proc, names, results_file):
        self.command = " ".join(str(a) for a in command)
        self.returncode, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        self.names = names
        self.results_text = results_file.read_text() if results_file.exists() else ""
        self.hosts = json.loads(self.results_text) if self.results_text else {}

    @cached_property
    def output(self):
        """Everything the run wrote: its output and the callback's file (where no secret may appear)."""
        return "\n".join((self.stdout, self.stderr, self.results_text))

    def host(self, case):
        host = self.names[case]
        if host not in self.hosts:
            raise AssertionError(f"no results for case {case} (host {host}) from `{self.command}`, rc {self.returncode}:\n"
                                 f"{self.stdout[-4000:]}\n{self.stderr[-4000:]}")
        return HostRun(self, case, host, self.hosts[host])


def _per_play_keywords(node, where):
    if isinstance(node, list):
        for child in node:
            yield from _per_play_keywords(child, where)
    elif isinstance(node, dict):
        for key in PER_PLAY_KEYWORDS:
            if key in node:
                yield f"{where}: task {node.get('name')!r} has {key}"
        for child in node.values():
            yield from _per_play_keywords(child, where)


def check_single_host_equivalence(roles=(), task_files=()):
    """Stop the batch if a role or a role it depends on (their vars/, the role's validation, its
    dependencies' tasks) or a given task file has something that depends on the play's other
    hosts and is not pinned in SINGLE_HOST_VALUES."""
    problems, paths = [], list(task_files)
    for role in roles:
        pinned, found = SINGLE_HOST_VALUES.get(role, {}), set()
        meta = yaml.safe_load((ROOT / "roles" / role / "meta" / "main.yml").read_text()) or {}
        dependencies = [dep["role"].split(".")[-1] for dep in meta.get("dependencies") or []]
        for name in [role, *dependencies]:
            for path in sorted((ROOT / "roles" / name / "vars").glob("*.yml")):
                for var, value in (yaml.safe_load(path.read_text()) or {}).items():
                    if PER_PLAY.search(str(value)):
                        found.add(var)
                        if var not in pinned:
                            problems.append(f"{path.relative_to(ROOT)}: {var} depends on the play's hosts")
        problems += [f"roles/{role}/vars: {var}, pinned in SINGLE_HOST_VALUES, no longer depends on the play's hosts"
                     for var in pinned if var not in found]
        paths.append(ROOT / "roles" / role / "tasks" / "validate.yml")
        paths += [ROOT / "roles" / name / "tasks" / "main.yml" for name in dependencies]
    for path in paths:
        if path.exists():
            problems += _per_play_keywords(yaml.safe_load(path.read_text()), path.relative_to(ROOT))
    if problems:
        raise AssertionError("a batch of cases would not test what a run per case does (tests/rolecheck.py):\n"
                             + "\n".join(problems))


def run_batch(workdir, env, playbook, cases, args=(), extra_vars=None, groups=(), forks=FORKS):
    """Run `playbook` once for {case id: variables}, one local host per case; the Batch."""
    names = host_names(cases)
    hosts = {
        names[case]: {**variables, "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
        for case, variables in cases.items()
    }
    inventory = workdir / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts, "children": {group: {} for group in groups}}}, indent=1))
    results = workdir / "results.json"
    command = ["ansible-playbook", *args, "--forks", str(forks), "-i", str(inventory), str(playbook)]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    proc = subprocess.run(
        command,
        cwd=ROOT,
        env={**env, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
             "ANSIBLE_CALLBACKS_ENABLED": "case_results", "CASE_RESULTS_FILE": str(results)},
        text=True,
        capture_output=True,
        timeout=1800,
    )
    return Batch(command, proc, names, results)


def run_role_batch(workdir, env, role, cases):
    """run_role_check for many cases of one role at once: {case id: variables} -> Batch."""
    check_single_host_equivalence([role])
    play = workdir / "play.yml"
    play.write_text(PLAYBOOK.format(role=role, hosts="all"))
    return run_batch(workdir, env, play, cases, args=["--check"], extra_vars=SINGLE_HOST_VALUES.get(role))


def run_playbook_batch(workdir, env, playbook, cases, roles=(), task_files=(), **kw):
    """A playbook of this repository for many cases at once: a copy whose `hosts: localhost` plays
    target every host (one per case), next to links to everything beside the original (its
    tasks/, group_vars/, imported playbooks), so it reads what the original does. `roles` and
    `task_files` are what it validates with, checked like run_role_batch's role."""
    check_single_host_equivalence(roles, task_files)
    original = ROOT / playbook
    for sibling in original.parent.iterdir():
        (workdir / sibling.name).symlink_to(sibling)
    copy = workdir / original.name
    copy.unlink()
    text, count = re.subn(r"^(\s*hosts:) localhost$", r"\1 all", original.read_text(), flags=re.M)
    assert count, f"{playbook} has no play on localhost"
    copy.write_text(text)
    return run_batch(workdir, env, copy, cases, **kw)


class Batches:
    """A test module's cases, grouped (by role, by playbook), each group one batch run on the
    first test that asks for one of its cases. cases: {case id: (group, variables)};
    run(workdir, group, {case id: variables}) -> Batch."""

    def __init__(self, tmp_path_factory, cases, run):
        self._tmp, self._cases, self._run, self._done = tmp_path_factory, cases, run, {}

    def batch(self, case):
        group = self._cases[case][0]
        if group not in self._done:
            members = {c: variables for c, (g, variables) in self._cases.items() if g == group}
            workdir = self._tmp.mktemp(re.sub(r"[^A-Za-z0-9_]+", "_", str(group)))
            try:
                self._done[group] = self._run(workdir, group, members)
            except Exception as error:  # every case of the group fails with it, without running it again
                self._done[group] = error
        if isinstance(self._done[group], Exception):
            raise self._done[group]
        return self._done[group]

    def __getitem__(self, case):
        return self.batch(case).host(case)


def role_batches(tmp_path_factory, env, cases):
    """Batches of {case id: (role, variables)}, one run_role_batch per role."""
    return Batches(tmp_path_factory, cases, lambda workdir, role, members: run_role_batch(workdir, env, role, members))
