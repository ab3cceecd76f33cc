"""The MLflow version is pinned in one place, roles/mlflow_server/defaults/main.yml
(mlflow_server_version), and everything else reads it (tests/pins.py). requirements.txt
cannot: pip reads no YAML, so the control node's client pin is checked against the role's.
"""

import re
import subprocess

from pins import MLFLOW_VERSION, ROLE_DEFAULTS, ROOT

# Files allowed to hold the pinned version as a literal, and why.
LITERAL_ALLOWED = {
    "roles/mlflow_server/defaults/main.yml": "the pin",
    "roles/mlflow_server/meta/argument_specs.yml": "the spec's default; tests/test_role_metadata.py checks it",
    "roles/mlflow_server/README.md": "the variable table generated from the spec (scripts/role-docs.py)",
    "requirements.txt": "the control node's client; test_requirements_pin_the_role_version checks it",
    "CHANGELOG.md": "history",
    # A malformed value built on a version, not a pin.
    "tests/test_mlflow_server_validation.py": "a bad-input sample",
}


def test_the_pin_is_a_release():
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", MLFLOW_VERSION), f"{ROLE_DEFAULTS}: {MLFLOW_VERSION!r}"


def test_requirements_pin_the_role_version():
    """The client the examples and the end-to-end checks use is the server's release."""
    pins = re.findall(r"^mlflow(?:\[[^\]]*\])?==([^\s;#]+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert pins == [MLFLOW_VERSION], (
        f"requirements.txt pins mlflow=={', '.join(pins) or '(nothing)'}, the role mlflow=={MLFLOW_VERSION} "
        f"({ROLE_DEFAULTS.relative_to(ROOT)}): change both together"
    )


def test_no_other_copy_of_the_pin():
    """Everything else reads the pin: a new literal copy would go stale at the next upgrade."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    pattern = re.compile(r"(?<![0-9.])" + re.escape(MLFLOW_VERSION) + r"(?![0-9])")
    copies = []
    for name in files:
        path = ROOT / name
        if name in LITERAL_ALLOWED or path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        copies += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert not copies, f"the MLflow pin {MLFLOW_VERSION} written out again (read it from tests/pins.py or the role):\n" + \
        "\n".join(copies)
