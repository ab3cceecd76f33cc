"""Apply one role to localhost in check mode, without facts, with given variables:
the validation tests use it to show that a bad variable fails before anything changes."""

import json
import subprocess
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PLAYBOOK = textwrap.dedent(
    """\
    ---
    - name: Apply {role} with the variables under test
      hosts: localhost
      connection: local
      gather_facts: false
      roles:
        - role: mlflow_aws.mlflow.{role}
    """
)


def run_role_check(tmp_path, env, role, variables):
    play = tmp_path / "play.yml"
    play.write_text(PLAYBOOK.format(role=role))
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
