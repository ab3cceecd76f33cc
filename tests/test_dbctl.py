"""Unit tests of roles/mlflow_server/files/mlflow-dbctl.py's bookkeeping (no database server):
backup sets and their manifests, what a failed dump leaves, pruning by set, and how a migration
stopped half-way is found. The PostgreSQL paths are drilled in molecule (upgrade, mlflow_server)."""

import importlib.util
import json
import sqlite3
from pathlib import Path

import pytest

DBCTL = Path(__file__).resolve().parents[1] / "roles" / "mlflow_server" / "files" / "mlflow-dbctl.py"


@pytest.fixture()
def dbctl(monkeypatch):
    spec = importlib.util.spec_from_file_location("mlflow_dbctl", DBCTL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "mlflow_version", lambda: "9.9.9")
    return module


@pytest.fixture()
def sqlite_pair(tmp_path, monkeypatch):
    tracking, auth = tmp_path / "mlflow.db", tmp_path / "basic_auth.db"
    for path in (tracking, auth):
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x INTEGER)")
            conn.execute("INSERT INTO t VALUES (1)")
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndatabase_uri = sqlite:///{auth}\n")
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", f"sqlite:///{tracking}")
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    state = {"tracking": {"empty": False, "current": "aaa111"}, "auth": {"empty": False, "current": "bbb222"}}
    return tmp_path, state


def test_a_set_is_both_databases_under_one_stamp_with_checksums(dbctl, sqlite_pair):
    tmp_path, state = sqlite_pair
    backups = tmp_path / "backups"
    manifest = dbctl.backup_pair(state, backups, "aaa111")
    files = sorted(p.name for p in backups.iterdir())
    stamp = manifest["set"]
    assert files == sorted([f"backup-{stamp}.json", f"mlflow-aaa111-{stamp}.sqlite", f"basic_auth-aaa111-{stamp}.sqlite"])
    written = json.loads((backups / f"backup-{stamp}.json").read_text())
    assert written["databases"]["auth"]["revision"] == "bbb222" and written["mlflow_version"] == "9.9.9"
    for entry in written["databases"].values():
        assert dbctl.sha256(backups / entry["file"]) == entry["sha256"]
        assert (backups / entry["file"]).stat().st_mode & 0o777 == 0o600


def test_an_empty_database_is_not_dumped(dbctl, sqlite_pair):
    tmp_path, state = sqlite_pair
    state["auth"]["empty"] = True
    manifest = dbctl.backup_pair(state, tmp_path / "backups", "aaa111")
    assert list(manifest["databases"]) == ["tracking"]


def test_a_failed_second_dump_leaves_no_half_set(dbctl, sqlite_pair, monkeypatch):
    tmp_path, state = sqlite_pair
    real = dbctl._dump

    def dump(url, target, pg_dump):
        if "basic_auth" in str(target):
            target.write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        return real(url, target, pg_dump)

    monkeypatch.setattr(dbctl, "_dump", dump)
    collected = []
    with pytest.raises(OSError, match="No space left"):
        dbctl.backup_pair(state, tmp_path / "backups", "aaa111", out=collected)
    assert list((tmp_path / "backups").iterdir()) == [] and collected == []


def test_prune_keeps_the_newest_sets_and_their_manifests(dbctl, tmp_path):
    for day in range(1, 6):
        stamp = f"202610{day:02d}T000000Z"
        for db in ("mlflow", "mlflow_auth"):
            (tmp_path / f"{db}-abc-{stamp}.dump").write_text("x")
        (tmp_path / f"backup-{stamp}.json").write_text("{}")
    (tmp_path / "migrations.jsonl").write_text("")
    result = dbctl.prune_backups(tmp_path, 2)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["migrations.jsonl"] + [f"{db}-abc-202610{d}T000000Z.dump" for db in ("mlflow", "mlflow_auth") for d in ("04", "05")]
                          + [f"backup-202610{d}T000000Z.json" for d in ("04", "05")])
    assert len(result["removed"]) == 9 and result["kept"] == 4
    assert dbctl.prune_backups(tmp_path, 2)["changed"] is False


def test_a_migration_stopped_half_way_is_found_until_one_finishes(dbctl, tmp_path):
    assert dbctl.interrupted(tmp_path) is None
    dbctl.journal(tmp_path, {"run": "r1", "phase": "backed-up"})
    dbctl.journal(tmp_path, {"run": "r1", "phase": "tracking-upgraded"})
    assert dbctl.interrupted(tmp_path)["phase"] == "tracking-upgraded"
    dbctl.journal(tmp_path, {"run": "r2", "phase": "done"})
    dbctl.journal(tmp_path, {"changed": True, "upgraded": ["auth"]})
    assert dbctl.interrupted(tmp_path) is None
    # An older journal (no phases) is read as finished migrations.
    (tmp_path / "migrations.jsonl").write_text(json.dumps({"changed": True}) + "\n")
    assert dbctl.interrupted(tmp_path) is None


# ---- status reads the migrations without importing them -----------------------------


def alembic_scripts(cfg):
    from alembic.script import ScriptDirectory

    return {s.revision: s.down_revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}


@pytest.mark.parametrize("which", ["tracking", "auth"])
def test_migration_scripts_read_as_alembic_reads_them(dbctl, which, tmp_path):
    """The installed MLflow's migrations, read from the files' literals, are what alembic's own
    loader (which imports them) finds, revision by revision; a directory with a script that has
    no literal revision goes through alembic's loader."""
    from alembic.config import Config

    migrations = dbctl.MIGRATIONS[which][0]
    cfg = Config()  # what MLflow's _get_alembic_config sets that matters here (the auth one needs mlflow[auth])
    cfg.set_main_option("script_location", str(dbctl.mlflow_dir().joinpath(*migrations)))
    versions = dbctl.mlflow_dir().joinpath(*migrations, "versions")
    expected = {rev: tuple(down) if isinstance(down, (tuple, list)) else (down,) if down else ()
                for rev, down in alembic_scripts(cfg).items()}
    assert len(expected) > 3
    assert dbctl.migration_scripts(versions, lambda: pytest.fail("alembic's loader was used")) == expected
    odd = tmp_path / "versions"
    odd.mkdir()
    (odd / "a_first.py").write_text('revision = "aaa"\ndown_revision = None\n')
    (odd / "b_computed.py").write_text('revision = "bb" + "b"\ndown_revision = "aaa"\n')
    assert dbctl.migration_scripts(odd, lambda: cfg) == expected


def test_status_against_empty_known_and_unknown_revisions(dbctl, tmp_path, monkeypatch):
    from mlflow.store.db.utils import _get_alembic_config
    from alembic.script import ScriptDirectory

    tracking = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", f"sqlite:///{tracking}")
    monkeypatch.delenv("MLFLOW_AUTH_CONFIG_PATH", raising=False)
    script = ScriptDirectory.from_config(_get_alembic_config(f"sqlite:///{tracking}"))
    head = script.get_current_head()
    first = [s.revision for s in script.walk_revisions()][-1]
    state = dbctl.status()
    assert state["tracking"] == {"current": None, "head": head, "empty": True, "known": True}
    assert state["needed"] and not state["downgrade"]
    for revision, needed, downgrade in ((first, True, False), (head, False, False), ("0123456789ab", True, True)):
        with sqlite3.connect(tracking) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)")
            conn.execute("DELETE FROM alembic_version")
            conn.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        state = dbctl.status()
        assert state["tracking"]["current"] == revision and not state["tracking"]["empty"], state
        assert (state["needed"], state["downgrade"]) == (needed, downgrade), (revision, state)
