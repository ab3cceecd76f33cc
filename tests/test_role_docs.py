"""The role READMEs' variable tables are generated from meta/argument_specs.yml
(scripts/role-docs.py, `make docs`) and must be current:
- `role-docs.py --check` reports no stale README;
- no generated block carries raw Ansible doc markup (C(...), V(...), I(...), ...);
- the generator converts markup, escapes table cells and is idempotent.
"""

import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "role-docs.py"

_spec = importlib.util.spec_from_file_location("role_docs", SCRIPT)
role_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(role_docs)

RAW_MARKUP = re.compile(r"(?<![A-Za-z0-9_])(?:RV|[CVIOBULMEP])\(")


def generated_blocks():
    for readme in sorted((ROOT / "roles").glob("*/README.md")):
        text = readme.read_text()
        start = text.find(role_docs.BEGIN)
        if start < 0:
            continue
        end = text.find(role_docs.END, start)
        yield readme, text[start:end]


def test_readmes_are_current():
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], cwd=ROOT, text=True, capture_output=True, timeout=120
    )
    assert res.returncode == 0, (
        "role READMEs are stale, run `make docs` and commit the result:\n" + res.stdout[-12000:] + res.stderr
    )


def test_every_documented_role_has_a_generated_block():
    roles = [p for p in sorted((ROOT / "roles").iterdir()) if p.is_dir() and role_docs.documented(p)]
    assert roles
    with_block = {readme.parent for readme, _ in generated_blocks()}
    missing = [p.name for p in roles if p not in with_block]
    assert not missing, f"README without a generated variable block: {missing}"


@pytest.mark.parametrize("readme,block", list(generated_blocks()), ids=lambda v: getattr(v, "parent", Path("")).name)
def test_no_raw_ansible_markup_in_generated_block(readme, block):
    leaks = [line for line in block.splitlines() if RAW_MARKUP.search(line)]
    assert not leaks, f"{readme.relative_to(ROOT)}: raw Ansible markup in the generated table:\n" + "\n".join(leaks)


@pytest.mark.parametrize(
    "markup,markdown",
    [
        ("C(x)", "`x`"),
        ("V(a=b)", "`a=b`"),
        ("O(ns.coll.mod#module:opt=1)", "`opt=1`"),
        ("I(italic) and B(bold)", "*italic* and **bold**"),
        ("U(https://example.org)", "[https://example.org](https://example.org)"),
        ("L(the docs, https://example.org/d)", "[the docs](https://example.org/d)"),
        ("M(ansible.builtin.copy)", "`ansible.builtin.copy`"),
        ("E(HOME)", "`HOME`"),
        ("C(<name>.service)", "`<name>.service`"),
        ("holds <version> and *", "holds &lt;version> and \\*"),
        ("a C(`tick`) b", "a `` `tick` `` b"),
        ("V(a\\)b)", "`a)b`"),
        ("ABC(x) stays", "ABC(x) stays"),
    ],
)
def test_markup_to_markdown(markup, markdown):
    assert role_docs.markup_to_md(markup) == markdown


def test_cells_escape_pipes_and_join_paragraphs():
    rows = role_docs.option_rows(
        {
            "r_opt": {
                "type": "str",
                "default": "{{ a | default('') }}",
                "choices": ["x|y", "z"],
                "description": ["First C(a|b).", "Second\n  line."],
            }
        }
    )
    assert rows == [
        "| `r_opt` | str<br>one of `x\\|y`, `z` | `\"{{ a \\| default('') }}\"` | First `a\\|b`.<br>Second line. |"
    ]


def test_defaults_are_compact_and_unambiguous():
    md = role_docs.default_md
    assert md("present") == "`present`"
    assert md("") == '`""`'
    assert md("17") == '`"17"`'
    assert md("1:30") == '`"1:30"`'  # YAML 1.1 reads 1:30 as 90
    assert md(True) == "`true`"
    assert md(["a", 1]) == '`["a", 1]`'
    assert md({}) == "`{}`"


def _make_role(tmp_path, readme=None):
    role = tmp_path / "roles" / "demo"
    (role / "meta").mkdir(parents=True)
    (role / "meta" / "argument_specs.yml").write_text(
        textwrap.dedent(
            """\
            ---
            argument_specs:
              main:
                short_description: A demo role.
                options:
                  demo_items:
                    type: list
                    elements: dict
                    default: []
                    description: Items.
                    options:
                      name:
                        type: str
                        required: true
                        description: Name, see C(demo_items).
              other:
                short_description: Another entry point.
                options:
                  demo_flag:
                    type: bool
                    default: false
                    description: A flag.
            """
        )
    )
    if readme is not None:
        (role / "README.md").write_text(readme)
    return role


def test_write_then_check_is_clean_and_idempotent(tmp_path):
    role = _make_role(tmp_path, "# demo\n\nProse.\n\n## Variables\n\n" + role_docs.BEGIN + "\nold\n" + role_docs.END + "\n\nMore prose.\n")
    roles_dir = ["--roles-dir", str(role.parent)]
    assert role_docs.main(["--check", *roles_dir]) == 1
    assert role_docs.main(roles_dir) == 0
    first = (role / "README.md").read_text()
    assert role_docs.main(["--check", *roles_dir]) == 0
    assert role_docs.main(roles_dir) == 0
    assert (role / "README.md").read_text() == first
    assert first.startswith("# demo\n\nProse.\n") and first.endswith("\n\nMore prose.\n")
    assert "### Entry point `main`" in first and "### Entry point `other`" in first
    assert "| `demo_items[].name` | str |  | **Required.** Name, see `demo_items`. |" in first
    assert "old" not in first


def test_missing_readme_is_created(tmp_path):
    role = _make_role(tmp_path)
    assert role_docs.main(["--check", "--roles-dir", str(role.parent)]) == 1
    assert not (role / "README.md").exists()
    assert role_docs.main(["--roles-dir", str(role.parent)]) == 0
    text = (role / "README.md").read_text()
    assert text.startswith("# demo\n\nA demo role.\n\n## Variables\n\n" + role_docs.BEGIN)
