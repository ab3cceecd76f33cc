"""Every role documents and validates every variable it takes:
- meta/argument_specs.yml and defaults/main.yml name the same variables, and the
  spec's defaults match defaults/main.yml;
- every option has a description and a type, and every name carries the role's prefix;
- the role README mentions every variable;
- every template starts with the ansible_managed comment.
Internal roles (roles/_<name>, e.g. _common) pass the same checks, with the prefix _<name>_;
their tasks files are exactly their entry points (each included with tasks_from).
The collection-wide inputs (COLLECTION_WIDE) are the one exception: declared once, in _common,
and in no other role's defaults or argument_specs.
"""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# Read by every AWS role, declared (defaults, argument_specs) only in roles/_common.
COLLECTION_WIDE = {"mlflow_deployment_name", "mlflow_aws_region", "mlflow_aws_endpoint_url", "mlflow_aws_tags"}
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())


def load(path):
    return yaml.safe_load(path.read_text()) or {}


def spec_options(role):
    specs = load(role / "meta" / "argument_specs.yml")["argument_specs"]
    opts = {}
    for entry in specs.values():
        opts.update(entry.get("options") or {})
    return opts


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_match_defaults(role):
    defaults = load(role / "defaults" / "main.yml") if (role / "defaults" / "main.yml").exists() else {}
    opts = spec_options(role)
    assert set(defaults) <= set(opts), f"in defaults but not in argument_specs: {sorted(set(defaults) - set(opts))}"
    undocumented_required = {k for k, v in opts.items() if k not in defaults and not v.get("required")}
    assert not undocumented_required, (
        f"in argument_specs without a default in defaults/main.yml and not required: {sorted(undocumented_required)}"
    )
    for name, default in defaults.items():
        if "default" in opts[name]:
            assert opts[name]["default"] == default, f"{name}: spec default {opts[name]['default']!r} != {default!r}"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_options_are_typed_described_and_prefixed(role):
    for name, opt in spec_options(role).items():
        if role.name == "_common" and name in COLLECTION_WIDE:
            continue
        assert name.startswith(role.name + "_"), f"{name} lacks the role prefix {role.name}_"
        assert opt.get("description"), f"{name} has no description"
        assert opt.get("type"), f"{name} has no type"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_readme_documents_every_variable(role):
    readme = (role / "README.md").read_text()
    missing = [n for n in spec_options(role) if f"`{n}`" not in readme]
    assert not missing, f"{role.name}/README.md does not document: {missing}"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_templates_start_with_ansible_managed(role):
    for tpl in sorted((role / "templates").rglob("*.j2")) if (role / "templates").is_dir() else []:
        first = tpl.read_text().splitlines()[0]
        assert "ansible_managed" in first, f"{tpl.relative_to(ROOT)} does not start with ansible_managed"


@pytest.mark.parametrize("role", [p for p in ROLES if p.name.startswith("_")], ids=lambda p: p.name)
def test_internal_role_tasks_files_are_its_entry_points(role):
    specs = load(role / "meta" / "argument_specs.yml")["argument_specs"]
    files = {p.stem for p in (role / "tasks").glob("*.yml")}
    assert set(specs) == files, (
        f"{role.name}: tasks files without an entry point in meta/argument_specs.yml: {sorted(files - set(specs))}, "
        f"entry points without a tasks file: {sorted(set(specs) - files)}"
    )


def test_collection_wide_inputs_are_declared_once():
    declared = {role.name: COLLECTION_WIDE & set(spec_options(role)) for role in ROLES}
    assert declared.pop("_common") == COLLECTION_WIDE
    assert not any(declared.values()), f"declared outside _common: {declared}"
