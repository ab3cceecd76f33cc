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

# What is still shared between the six AWS roles, each with why. Issue 12 stays open
# on these: every AWS role declares the same four shared inputs (deployment name,
# region, endpoint URL, tags: defaults and argument_specs) under its own prefix, and
# wraps its tasks in the same module_defaults block. Removing them means reading the
# collection-wide variables (mlflow_aws_region, ...) directly, documented once in
# roles/_common - a change of the roles' public variables, not done yet. An entry that
# no longer matches anything fails the test, so the list can only shrink.
KNOWN = {
    "meta/argument_specs.yml": "the four shared inputs, declared per role",
    "defaults/main.yml": "the four shared inputs, defaulted per role from the mlflow_* group vars",
    "tasks/main.yml": "validate, then the module_defaults block (region, endpoint) around present/absent",
    "tasks/validate.yml": "the include of _common's aws_preflight followed by a role's first assert",
}


def normalized_lines(path, role):
    """The role's own name counts as a placeholder: `aws_network_region` in one role and
    `aws_artifact_bucket_region` in another are the same line."""
    out = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = " ".join(raw.split()).replace(role, "<role>")
        if line in SKIP or line.startswith("#") or line.startswith("{#"):
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


def known(pair):
    """The file both sides of a pair share, when KNOWN lists it for the AWS roles."""
    pa, _, _, pb, _, _ = pair
    role_a, rel_a = pa.parts[1], "/".join(pa.parts[2:])
    role_b, rel_b = pb.parts[1], "/".join(pb.parts[2:])
    if role_a.startswith("aws_") and role_b.startswith("aws_") and rel_a == rel_b and rel_a in KNOWN:
        return rel_a
    return None


def show(pair):
    pa, la, ha, pb, lb, hb = pair
    return f"{pa}:{la}-{ha} ~ {pb}:{lb}-{hb}"


def test_no_block_of_six_lines_is_shared_between_roles():
    found = [p for p in shared_runs() if not known(p)]
    assert not found, f"{len(found)} blocks of >= {WINDOW} lines shared between roles:\n" + "\n".join(map(show, found))


def test_known_remainder_is_still_there():
    """KNOWN only shrinks: an entry nothing matches any more is to be deleted."""
    runs = shared_runs()
    print("\n".join(f"known ({known(p)}): {show(p)}" for p in runs if known(p)))
    stale = set(KNOWN) - {known(p) for p in runs}
    assert not stale, f"no longer shared, delete from KNOWN: {sorted(stale)}"


def test_the_check_finds_a_copied_block(tmp_path, monkeypatch):
    """The check can fail: two roles with the same seven-line task are reported."""
    block = "\n".join(f"line {n}: value" for n in range(7)) + "\n"
    for role in ("one", "two"):
        (tmp_path / "roles" / role / "tasks").mkdir(parents=True)
        (tmp_path / "roles" / role / "tasks" / "main.yml").write_text("---\n# differs " + role + "\n" + block)
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert len(shared_runs()) == 1
