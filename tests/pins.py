"""The MLflow release the project pins, read from its one place: `mlflow_server_version` in
roles/mlflow_server/defaults/main.yml. Tests and molecule verifiers import it instead of
writing the version down; requirements.txt (pip cannot read YAML) is checked against it by
tests/test_version_pin.py, the role's argument spec default by tests/test_role_metadata.py.
Molecule playbooks read the same file (molecule/shared/tasks/wheelhouse.yml).

    from pins import MLFLOW_VERSION   # from tests/; molecule verifiers add tests/ to sys.path
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLE_DEFAULTS = ROOT / "roles" / "mlflow_server" / "defaults" / "main.yml"


def mlflow_version() -> str:
    """The pinned MLflow release, "X.Y.Z"."""
    return str(yaml.safe_load(ROLE_DEFAULTS.read_text())["mlflow_server_version"])


MLFLOW_VERSION = mlflow_version()
