"""The collection artifact (issue 12): `ansible-galaxy collection build` of this repository.

- It holds the collection: MANIFEST.json/FILES.json, README.md, meta/runtime.yml and every
  file of roles/ and plugins/ that git tracks.
- It leaves out what is the repository's own: scenarios, venv, inventory and deployment
  variables, the in-repo collection link, git, scripts, examples, earlier tarballs, and
  anything vault-encrypted; no link in it dangles or leaves it.
- It installs offline into an empty directory (galaxy.yml's dependencies are satisfied by the
  venv's ansible package), passes `ansible-galaxy collection verify`, and `ansible-doc` finds
  its modules and roles by full name there, with nothing of the repository configured.

The molecule scenario `collection` then applies roles of such an install to a host.
"""

import json
import os
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
NAME = f"{GALAXY['namespace']}.{GALAXY['name']}"

# Top-level entries of the repository that must never ship.
REPO_ONLY = {
    "molecule", ".venv", "inventory", "group_vars", ".collections", ".git", "scripts", "examples",
    ".ci", ".config", ".github", ".cache", ".test-logs", ".pytest_cache", ".ansible", "ansible.cfg",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("collection-build")


@pytest.fixture(scope="module")
def env(workdir):
    """The venv on PATH, no ansible.cfg (commands run in the empty workdir) and only the
    workdir's install on the collections path (plus the venv's collections on sys.path)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    e["PATH"] = str(ROOT / ".venv" / "bin") + os.pathsep + e.get("PATH", "")
    e["ANSIBLE_COLLECTIONS_PATH"] = str(workdir / "collections")
    e["ANSIBLE_FORCE_COLOR"] = "0"
    return e


def run(cmd, env, cwd):
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def tarball(workdir, env):
    dist = workdir / "dist"
    run(["ansible-galaxy", "collection", "build", "--output-path", str(dist), str(ROOT)], env, workdir)
    built = list(dist.glob("*.tar.gz"))
    assert [p.name for p in built] == [f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"]
    return built[0]


@pytest.fixture(scope="module")
def members(tarball):
    with tarfile.open(tarball) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


@pytest.fixture(scope="module")
def installed(tarball, workdir, env):
    install = workdir / "collections"
    install.mkdir()
    run(["ansible-galaxy", "collection", "install", "--offline", "-p", str(install), str(tarball)], env, workdir)
    return install / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]


def tracked(*paths):
    out = subprocess.run(["git", "ls-files", "-z", *paths], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    # Files deleted in the working tree but not yet in git are not built either.
    return sorted(f for f in out.split("\0") if f and (ROOT / f).is_file())


def test_artifact_holds_the_collection(members):
    for required in ("MANIFEST.json", "FILES.json", "README.md", "meta/runtime.yml"):
        assert required in members, required
    missing = [f for f in tracked("roles", "plugins", "meta") if f not in members]
    assert not missing, f"tracked collection files not in the artifact: {missing}"
    roles = {p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/main.yml")}
    assert {n.split("/")[1] for n in members if n.startswith("roles/") and n.count("/") >= 1} == roles


def test_manifest_matches_galaxy_yml(tarball):
    with tarfile.open(tarball) as tar:
        info = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == (GALAXY["namespace"], GALAXY["name"], GALAXY["version"])
    assert info["dependencies"] == GALAXY["dependencies"]


def test_artifact_leaves_out_the_repository(members):
    shipped = sorted(members)
    assert not [n for n in shipped if PurePosixPath(n).parts[0] in REPO_ONLY]
    # Nowhere, not even as a link: deployment variables stay in the repository.
    assert not [n for n in shipped if {"group_vars", "host_vars"} & set(PurePosixPath(n).parts)]
    assert not [n for n in shipped if n.endswith(".tar.gz")]
    assert not [n for n in shipped if PurePosixPath(n).name.startswith((".vault", ".env")) or n.endswith((".pem", ".key", ".retry"))]


def test_no_vault_encrypted_file(tarball):
    with tarfile.open(tarball) as tar:
        encrypted = [m.name for m in tar.getmembers() if m.isfile() and tar.extractfile(m).read(14) == b"$ANSIBLE_VAULT"]
    assert not encrypted


def test_links_stay_inside_and_resolve(members):
    for name, m in members.items():
        if m.issym() or m.islnk():
            target = PurePosixPath(os.path.normpath(PurePosixPath(name).parent / m.linkname))
            assert not m.linkname.startswith("/") and ".." not in target.parts, f"{name} -> {m.linkname}"
            assert str(target) in members, f"{name} -> {m.linkname} dangles"


def test_installs_offline_into_an_empty_directory_unmodified(installed, workdir, env):
    assert (installed / "MANIFEST.json").is_file() and not (installed / "galaxy.yml").exists()
    res = run(["ansible-galaxy", "collection", "verify", "--offline", NAME, "-p", str(workdir / "collections")], env, workdir)
    assert "internally consistent with its manifest" in res.stdout
    listed = json.loads(run(["ansible-galaxy", "collection", "list", NAME, "--format", "json"], env, workdir).stdout)
    assert listed == {str(workdir / "collections" / "ansible_collections"): {NAME: {"version": GALAXY["version"]}}}


def test_ansible_doc_from_the_install(installed, workdir, env):
    res = run(["ansible-doc", f"{NAME}.mlflow_auth_user"], env, workdir)
    assert str(installed / "plugins" / "modules" / "mlflow_auth_user.py") in res.stdout
    # The shared connection options come from the collection's doc fragment.
    assert "api_url" in res.stdout and "admin_password" in res.stdout
    modules = json.loads(run(["ansible-doc", "--list", "--json", NAME], env, workdir).stdout)
    assert {m.split(".")[-1] for m in modules} == {p.stem for p in (ROOT / "plugins" / "modules").glob("*.py")}
    role = run(["ansible-doc", "--type", "role", f"{NAME}.mlflow_proxy"], env, workdir).stdout
    assert "mlflow_proxy_tls_mode" in role
