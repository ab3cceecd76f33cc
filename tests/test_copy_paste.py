"""No block of six or more lines is shared between two roles.

The copy-paste check of issue 12, for what the `duplicates` tool does not read (YAML
and Jinja): every file of every role (tasks, handlers, defaults, vars, meta, templates,
files) is read as normalized lines (surrounding white space dropped; blank lines,
comment-only lines and `---` passed over; the role's own name replaced by a
placeholder, so a copy that only renamed the role's prefix still counts), and any run of WINDOW such lines that stands
in two roles is reported with both places. Shared code belongs in roles/_common or a
plugin. Not read: a role's README (prose) and meta/main.yml (the galaxy_info every
role must carry, which Ansible cannot share).
"""

from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 6
SKIP = {"---", "", "{{ ansible_managed | comment }}"}
# The frame of the one value-check task every role's tasks/validate.yml has (CONTRIBUTING,
# "A bad input fails before anything changes"): the convention, not shared logic. It is passed
# over in those files only; the checks inside it, which differ, are read as any other line.
CHECK_FRAME = {
    "- name: Check the values of the variables",
    "ansible.builtin.assert:",
    "that: _<role>_problems | length == 0",
    'fail_msg: "{{ _<role>_problems }}"',
    "quiet: true",
    "vars:",
    "_<role>_problems: \"{{ _<role>_checks | rejectattr('ok') | map(attribute='msg') | list }}\"",
    "_<role>_checks:",
}


def normalized_lines(path, role):
    """The role's own name counts as a placeholder: `aws_network_vpc_id` in one role and
    `aws_security_groups_vpc_id` in another are the same line."""
    out = []
    frame = CHECK_FRAME if path.as_posix().endswith("/tasks/validate.yml") else set()
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = " ".join(raw.split()).replace(role, "<role>")
        if line in SKIP or line in frame or line.startswith("#") or line.startswith("{#"):
            continue
        out.append((number, line))
    return out


def role_files():
    for role in sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir()):
        for path in sorted(role.rglob("*")):
            if path.is_file() and path.name != "README.md" and "__pycache__" not in path.parts \
                    and path.relative_to(role).as_posix() != "meta/main.yml":
                yield role.name, path


def shared_runs():
    seen = defaultdict(list)  # window text -> [(role, path, first line, last line)]
    for role, path in role_files():
        lines = normalized_lines(path, role)
        for i in range(len(lines) - WINDOW + 1):
            chunk = lines[i:i + WINDOW]
            seen["\n".join(text for _, text in chunk)].append((role, path, chunk[0][0], chunk[-1][0]))
    pairs = {}
    for places in seen.values():
        roles = {p[0] for p in places}
        if len(roles) < 2:
            continue
        a, b = sorted(places, key=lambda p: (p[0], str(p[1])))[:2]
        if a[0] == b[0]:
            b = next(p for p in places if p[0] != a[0])
        key = (a[1], b[1])
        lo_a, hi_a, lo_b, hi_b = pairs.get(key, (a[2], a[3], b[2], b[3]))
        pairs[key] = (min(lo_a, a[2]), max(hi_a, a[3]), min(lo_b, b[2]), max(hi_b, b[3]))
    return sorted(
        (pa.relative_to(ROOT), la, ha, pb.relative_to(ROOT), lb, hb)
        for (pa, pb), (la, ha, lb, hb) in pairs.items()
    )


def show(pair):
    pa, la, ha, pb, lb, hb = pair
    return f"{pa}:{la}-{ha} ~ {pb}:{lb}-{hb}"


def test_no_block_of_six_lines_is_shared_between_roles():
    found = list(shared_runs())
    assert not found, f"{len(found)} blocks of >= {WINDOW} lines shared between roles:\n" + "\n".join(map(show, found))


def test_the_check_frame_is_passed_over_only_in_validate_files():
    """The frame of the value-check task is the convention in every role's validate.yml: read
    there, it would make every pair of roles a copy. Elsewhere, and for the checks inside it, the
    lines count."""
    roles = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/tasks/validate.yml")
                   if "Check the values of the variables" in p.read_text())
    assert len(roles) >= 10, roles
    path = ROOT / "roles" / roles[0] / "tasks" / "validate.yml"
    kept = {text for _, text in normalized_lines(path, roles[0])}
    assert not kept & CHECK_FRAME and any(text.startswith("- ok:") for text in kept)
    assert "quiet: true" in {text for _, text in normalized_lines(ROOT / "roles/_common/tasks/os_vars.yml", "_common")}


def test_the_check_finds_a_copied_block(tmp_path, monkeypatch):
    """The check can fail: two roles with the same seven-line task are reported."""
    block = "\n".join(f"line {n}: value" for n in range(7)) + "\n"
    for role in ("one", "two"):
        (tmp_path / "roles" / role / "tasks").mkdir(parents=True)
        (tmp_path / "roles" / role / "tasks" / "main.yml").write_text("---\n# differs " + role + "\n" + block)
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert len(shared_runs()) == 1
