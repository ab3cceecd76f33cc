"""ansible-test sanity and units on the collection as it ships.

ansible-test needs the collection at a physical path .../ansible_collections/<ns>/<name>
(the .collections link does not do: it resolves the real path), so the collection is built
with ansible-galaxy (galaxy.yml's build_ignore applies) and installed into a temporary
ansible_collections tree, next to links to the collections it depends on (they come with
the pinned `ansible` package in the venv). The artifact leaves tests/ out (it is for
users; molecule/collection checks that), so tests/unit and tests/sanity (the sanity
ignores) are copied into the installed copy. `ansible-test sanity` runs there without
--docker or --venv, then `ansible-test units --venv`.

ansible-test still gives each sanity test that has Python requirements a virtualenv of its
own, with the versions it pins (pylint, pycodestyle, voluptuous, yamllint...), installed by
pip from the machine's configured package index and cached under .cache/ansible-test (its
HOME, with pip's cache); units gets one too (pytest, pytest-xdist, pytest-mock, mock). The one thing it would fetch from elsewhere is pip's bootstrap
script (get-pip.py from ansible's CI file server): GET_PIP_STANDIN takes its place in
ansible-test's cache, bootstrapping pip from the standard library's ensurepip instead.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CACHE_HOME = ROOT / ".cache" / "ansible-test"
PYTHON = "%d.%d" % sys.version_info[:2]

# Sanity tests left out, each with the reason. ansible-test's full list for a collection
# runs; none needs Docker or a network beyond the package index.
SKIP_TESTS = {}

# Findings in files outside plugins/ that their owners are to fix, which tests/sanity/ignore-*.txt
# cannot hold: ansible-lint (production profile, rule sanity[cannot-ignore]) rejects pylint
# entries there. They are added to the installed copy's ignore file only. Once a file is
# fixed, ansible-test's "ignores" test fails on the entry as unnecessary: delete it here then.
PENDING_FIXES = {
}

GET_PIP_STANDIN = '''\
"""Stand-in for get-pip.py (written by tests/test_sanity.py): ensurepip, then pip installs
what ansible-test asked for from the configured package index."""
import argparse
import ensurepip
import subprocess
import sys

parser = argparse.ArgumentParser(add_help=False)
parser.add_argument("--no-setuptools", action="store_true")
parser.add_argument("--no-wheel", action="store_true")
args = parser.parse_known_args()[1]
ensurepip.bootstrap(upgrade=True)
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade"] + args))
'''


def galaxy():
    return yaml.safe_load((ROOT / "galaxy.yml").read_text())


def ansible_test_pip_version():
    """The pip version ansible-test bootstraps into its virtualenvs (names the cache file)."""
    import ansible_test

    source = Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
    match = re.search(r"default_packages = dict\(\s*pip='([^']+)'", source.read_text())
    assert match, "cannot find the pip version in %s" % source
    return match.group(1)


def ansible_core_version():
    from ansible.release import __version__

    return ".".join(__version__.split(".")[:2])


def installed_collection_dir(fqcn):
    """Where the venv's `ansible` package keeps a collection (None when it does not)."""
    namespace, name = fqcn.split(".")
    for entry in sys.path:
        candidate = Path(entry) / "ansible_collections" / namespace / name
        if (candidate / "MANIFEST.json").is_file():
            return candidate
    return None


def clean_env():
    """The venv's tools first, no ANSIBLE_* from the caller (make exports ANSIBLE_CONFIG,
    whose collections_path would point ansible-doc at the repository instead of the copy
    under test), HOME in the cache."""
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("ANSIBLE_"))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["HOME"] = str(CACHE_HOME)
    return env


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """Build, install into <tmp>/ansible_collections/<ns>/<name>, link the dependencies,
    copy tests/unit and tests/sanity in."""
    meta = galaxy()
    env = clean_env()
    tmp = tmp_path_factory.mktemp("sanity")
    build = subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(tmp), str(ROOT)],
                           env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    artifact = tmp / ("%s-%s-%s.tar.gz" % (meta["namespace"], meta["name"], meta["version"]))
    install = subprocess.run(["ansible-galaxy", "collection", "install", "--force", "--no-deps", "-p", str(tmp / "collections"),
                              str(artifact)], env=env, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    tree = tmp / "collections" / "ansible_collections"
    for fqcn in meta.get("dependencies") or {}:
        source = installed_collection_dir(fqcn)
        assert source is not None, "dependency %s is not in the venv (the ansible package)" % fqcn
        link = tree.joinpath(*fqcn.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source, target_is_directory=True)
    installed = tree / meta["namespace"] / meta["name"]
    assert not (installed / "tests").exists(), "the artifact ships tests/: copying the test dirs over it would hide that"
    for part in ("unit", "sanity"):
        shutil.copytree(ROOT / "tests" / part, installed / "tests" / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    ignores = installed / "tests" / "sanity" / ("ignore-%s.txt" % ansible_core_version())
    with ignores.open("a") as out:
        out.writelines("%s # pending fix: %s\n" % item for item in sorted(PENDING_FIXES.items()))
    write_get_pip_standin()
    yield installed
    shutil.rmtree(tmp, ignore_errors=True)


def write_get_pip_standin():
    cache = CACHE_HOME / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    standin = cache / ("get_pip_%s.py" % ansible_test_pip_version().replace(".", "_"))
    if not standin.is_file() or standin.read_text() != GET_PIP_STANDIN:
        standin.write_text(GET_PIP_STANDIN)


def ansible_test(path, *args):
    """Run ansible-test in the installed copy; the output goes to .test-logs/ansible-test-<command>.log."""
    cmd = ["ansible-test", *args, "--python", PYTHON, "--color", "no"]
    started = time.monotonic()
    res = subprocess.run(cmd, cwd=path, env=clean_env(), capture_output=True, text=True, timeout=1800)
    output = res.stdout + res.stderr
    log = ROOT / ".test-logs" / ("ansible-test-%s.log" % args[0])
    log.parent.mkdir(exist_ok=True)
    log.write_text("$ %s\n(%.0f s)\n%s" % (" ".join(cmd), time.monotonic() - started, output))
    findings = [line for line in output.splitlines() if line.startswith(("ERROR:", "FATAL:", "FAILED "))]
    assert res.returncode == 0, "ansible-test %s failed (full output: %s):\n%s" % (
        args[0], log, "\n".join(findings) or output[-4000:])
    return output


def test_ansible_test_sanity(collection):
    skips = [arg for name in sorted(SKIP_TESTS) for arg in ("--skip-test", name)]
    output = ansible_test(collection, "sanity", *skips)
    assert "Running sanity test \"validate-modules\"" in output, output[-4000:]


def test_ansible_test_units(collection):
    """tests/unit again, through ansible-test's collection loader and pytest plugins."""
    output = ansible_test(collection, "units", "--venv")
    assert re.search(r"Unit test modules with Python .*\n(.*\n)*.* \d+ passed", output), output[-4000:]
