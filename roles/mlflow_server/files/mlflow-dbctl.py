#!/usr/bin/env python3
# Managed by Ansible (role mlflow_server). Runs with the venv's python as root.
"""Check and migrate the MLflow schema (tracking and basic-auth databases).

  mlflow-dbctl.py --env-file FILE status
  mlflow-dbctl.py --env-file FILE bootstrap < admin.json
  mlflow-dbctl.py --env-file FILE admin-password
  mlflow-dbctl.py --env-file FILE migrate --backup-dir DIR [--backup-s3-uri s3://b/p] [--no-backup]
                 [--pg-dump PATH] [--lock-timeout SECONDS] [--upgrade-timeout SECONDS]
  mlflow-dbctl.py --env-file FILE prune-backups --backup-dir DIR --keep N
  mlflow-dbctl.py --env-file FILE backup --backup-dir DIR [--backup-s3-uri s3://b/p] [--pg-dump PATH] [--label L]
  mlflow-dbctl.py --env-file FILE restore --backup-dir DIR --set STAMP [--tracking-db NAME] [--auth-db NAME]
                 [--create < admin.json] [--clean] [--pg-dump PATH]

Settings (backend URI, PGPASSWORD, auth ini, S3 endpoint) come from the systemd environment
file, so no secret ever appears on a command line. `migrate` holds a lock (a PostgreSQL
advisory lock, or a file lock next to the SQLite file; waiting at most --lock-timeout) so that
only one host of a group migrates; it backs the databases up, then runs `mlflow db upgrade` once, and appends what it did to
<backup-dir>/migrations.jsonl. `mlflow db upgrade` is stopped after --upgrade-timeout (PostgreSQL then
rolls its open transaction back). `prune-backups` keeps the N newest local backups of each database
(0: all). Output is one JSON object on stdout, without secrets.

Backups are pairs: the tracking and auth databases are dumped one after the other under one
stamp (<db>-<label>-<STAMP>.dump each) with a manifest, backup-<STAMP>.json (revisions, MLflow
version, sizes, SHA-256), the unit `restore` works on. `restore` checks the checksums, then
pg_restores both dumps in one transaction each into the named databases (default: the configured
ones), which must be empty unless --clean; with --create it first creates them, owned by MLflow's
role, as the administrator whose credentials it reads as JSON on stdin (as `bootstrap`). The
pg_restore used is the one next to --pg-dump. A migration appends its progress to
migrations.jsonl as it goes ("phase": backed-up, tracking-upgraded, done), so a run stopped between
the tracking and the auth migration is visible, and the next `migrate` finishes it.

`bootstrap` (PostgreSQL) makes MLflow's own database role, from the administrator's
credentials read as JSON ({"username": ..., "password": ..., "maintenance_db": ...}) on stdin:
the login role of MLFLOW_BACKEND_STORE_URI with the password in PGPASSWORD (created, or its
password set when a login with it fails; sent as a SCRAM-SHA-256 verifier, never in clear), owner of
the tracking and auth databases (created if missing) and of every table, view, sequence and type
the administrator owns in them (an earlier deployment's, made as the administrator). The
administrator keeps membership in the role (needed to hand objects over). Nothing else changes:
no REASSIGN OWNED, which would also take the administrator's other databases.

`admin-password` makes the stored password of the basic-auth admin (MLFLOW_AUTH_ADMIN_USERNAME)
match MLFLOW_AUTH_ADMIN_PASSWORD. MLflow reads that variable only to create the admin on the first
start, so without this a changed password would never reach the auth database. Before the first
start (no such user yet) it does nothing; the hash is MLflow's own (werkzeug, as its auth store).

pg_dump refuses to back up a server of a newer major version: before the first backup, `migrate`
compares the major version of PATH (default: pg_dump on the PATH) with the server's
(SHOW server_version_num) and refuses, before anything is backed up or migrated, when it is older.
"""

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

LOCK_ID = 0x4D4C464C  # "MLFL"


def load_env_file(path):
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        parts = shlex.split(value, posix=True)
        os.environ[key.strip()] = parts[0] if parts else ""


def auth_db_uri():
    ini = os.environ.get("MLFLOW_AUTH_CONFIG_PATH")
    if not ini:
        return None
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ini)
    return cfg["mlflow"]["database_uri"]


# Each database's migrations in the mlflow package, the module whose _get_alembic_config
# configures them, and the version table.
MIGRATIONS = {
    "tracking": (("store", "db_migrations"), "mlflow.store.db.utils", "alembic_version"),
    "auth": (("server", "auth", "db", "migrations"), "mlflow.server.auth.db.utils", "alembic_version_auth"),
}


def mlflow_dir():
    """The installed mlflow package's directory, found without importing it."""
    import importlib.util

    return Path(importlib.util.find_spec("mlflow").submodule_search_locations[0])


def migration_scripts(versions_dir, alembic_cfg):
    """{revision: (its down revisions)} of an alembic versions directory.

    Read from each script's literal `revision` / `down_revision` assignments, without importing
    the scripts: alembic's ScriptDirectory imports every migration, which imports MLflow, and
    `status` runs on every play (4-5 s of CPU on an idle host, about a minute on the loaded test
    machine). A script this cannot read (no literal assignments) sends the whole directory through
    alembic's own loader instead, alembic_cfg() giving its configuration."""
    import ast

    scripts = {}
    try:
        for path in sorted(Path(versions_dir).glob("*.py")):
            values = {}
            for node in ast.parse(path.read_text(), str(path)).body:
                if isinstance(node, ast.Assign):
                    targets = node.targets
                elif isinstance(node, ast.AnnAssign) and node.value is not None:
                    targets = [node.target]
                else:
                    continue
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                        values[target.id] = ast.literal_eval(node.value)
            if "revision" in values:
                scripts[values["revision"]] = values.get("down_revision")
            elif path.name != "__init__.py":
                raise ValueError(f"{path}: no literal revision")
    except (OSError, SyntaxError, ValueError):
        from alembic.script import ScriptDirectory

        scripts = {s.revision: s.down_revision for s in ScriptDirectory.from_config(alembic_cfg()).walk_revisions()}
    return {rev: tuple(down) if isinstance(down, (tuple, list)) else (down,) if down else ()
            for rev, down in scripts.items()}


def revisions(uri, scripts, version_table="alembic_version"):
    """The database's revision against the migrations' head; scripts: migration_scripts()."""
    import sqlalchemy
    from alembic.migration import MigrationContext

    heads = sorted(set(scripts) - {down for downs in scripts.values() for down in downs})
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads, not one: {heads}")
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn, opts={"version_table": version_table}).get_current_revision()
            tables = sqlalchemy.inspect(conn).get_table_names()
    finally:
        engine.dispose()
    return {"current": current, "head": heads[0], "empty": not tables, "known": current is None or current in scripts}


def status():
    """Where each database's schema is against the installed MLflow's migrations."""
    import importlib

    databases = {"tracking": os.environ["MLFLOW_BACKEND_STORE_URI"], "auth": auth_db_uri()}
    package = mlflow_dir()
    result = {}
    for name, uri in databases.items():
        if not uri:  # no basic-auth
            continue
        where, utils, version_table = MIGRATIONS[name]

        def alembic_cfg(utils=utils, uri=uri):
            return importlib.import_module(utils)._get_alembic_config(uri)

        scripts = migration_scripts(package.joinpath(*where, "versions"), alembic_cfg)
        result[name] = revisions(uri, scripts, version_table)
    result["needed"] = any(r["current"] != r["head"] for r in result.values() if isinstance(r, dict))
    result["downgrade"] = any(not r["known"] for r in result.values() if isinstance(r, dict))
    return result


def wait_for(acquire, timeout, what):
    """Calls acquire() until it returns True, for at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while not acquire():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} is still held by another host after {timeout} s (--lock-timeout): "
                               "is a migration running elsewhere, or did one hang?")
        time.sleep(2)


def flock_nb(fh):
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def migration_lock(uri, timeout=900):
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if url.get_backend_name() == "sqlite":
        lock_path = Path(url.database + ".migrate.lock")
        with lock_path.open("w") as fh:
            wait_for(lambda: flock_nb(fh), timeout, f"the migration lock {lock_path}")
            yield None
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        wait_for(lambda: conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:id)"), {"id": LOCK_ID}).scalar(),
                 timeout, "the migration lock (PostgreSQL advisory lock)")
        try:
            yield conn
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:id)"), {"id": LOCK_ID})
    engine.dispose()


def pg_major(num):
    """Major version from a server_version_num (170004 -> 17; 90624 -> 9)."""
    return int(num) // 10000


def check_pg_dump(conn, pg_dump):
    """The pg_dump that will back up, and the server it backs up; refuses an older pg_dump."""
    import sqlalchemy

    server_num = int(conn.execute(sqlalchemy.text("SHOW server_version_num")).scalar())
    server = f"{server_num // 10000}.{server_num % 10000}" if server_num >= 100000 else str(server_num)
    try:
        proc = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"cannot run {pg_dump} --version to back up the PostgreSQL {pg_major(server_num)} "
                           f"server: {exc}") from exc
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", proc.stdout)
    if not found:
        raise RuntimeError(f"cannot read the version of {pg_dump}: {proc.stdout.strip()!r}")
    dump_major = int(found.group(1))
    info = {"path": pg_dump, "version": proc.stdout.strip(), "major": dump_major,
            "server_version": server, "server_major": pg_major(server_num)}
    if dump_major < pg_major(server_num):
        raise RuntimeError(
            f"pg_dump {dump_major} ({pg_dump}: {proc.stdout.strip()}) is older than the database server, "
            f"PostgreSQL {pg_major(server_num)} ({server}), and refuses to back it up: nothing was backed up "
            f"or migrated. Set mlflow_server_db_server_version: \"{pg_major(server_num)}\" so the role installs "
            f"the PostgreSQL {pg_major(server_num)} client and backs up with its pg_dump")
    return info


def new_stamp():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def backup_one(uri, backup_dir, label, stamp, pg_dump="pg_dump"):
    """Dumps one database to <db>-<label>-<stamp>; a failed dump (a full disk...) leaves no file behind."""
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = backup_dir / (f"{Path(url.database).stem}-{label}-{stamp}.sqlite" if url.get_backend_name() == "sqlite"
                           else f"{url.database}-{label}-{stamp}.dump")
    try:
        _dump(url, target, pg_dump)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    os.chmod(target, 0o600)
    return target


def _dump(url, target, pg_dump):
    if url.get_backend_name() == "sqlite":
        import sqlite3

        src = sqlite3.connect(url.database)
        dst = sqlite3.connect(target)
        with dst:
            src.backup(dst)
        src.close()
        dst.close()
    else:
        cmd = [pg_dump, "--format=custom", "--no-password", f"--file={target}", *pg_conn_args(url), url.database]
        proc = subprocess.run(cmd, env=pg_env(url), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"pg_dump of {url.database} to {target} failed: {proc.stderr.strip()}")


def pg_env(url):
    env = dict(os.environ)
    for key, var in (("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT")):
        if key in url.query:
            env[var] = url.query[key]
    return env


def psycopg2_args(url):
    """psycopg2.connect() arguments for the server of a SQLAlchemy URL (TLS settings included)."""
    return {"host": url.host, "port": url.port or 5432, "connect_timeout": 15,
            **{k: v for k, v in url.query.items() if k in ("sslmode", "sslrootcert")}}


def pg_conn_args(url):
    return [f"--host={url.host}", f"--port={url.port or 5432}", f"--username={url.username}"]


def sha256(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backup_pair(state, backup_dir, label, pg_dump="pg_dump", s3_uri="", out=None):
    """Backs the tracking and auth databases up under one stamp, with a manifest; returns the manifest.
    `state` is status(): an empty database (nothing to lose) is not dumped. `out` (if given) collects
    the paths as they are written, so that a failure can still name them."""
    backup_dir = Path(backup_dir)
    stamp = new_stamp()
    manifest = {"set": stamp, "label": label, "mlflow_version": mlflow_version(), "databases": {}}
    parts = [("tracking", os.environ["MLFLOW_BACKEND_STORE_URI"])]
    if "auth" in state:
        parts.append(("auth", auth_db_uri()))
    made = []
    try:
        for part, uri in parts:
            if state[part]["empty"]:
                continue
            target = backup_one(uri, backup_dir, label, stamp, pg_dump)
            made.append(target)
            manifest["databases"][part] = {"file": target.name, "revision": state[part]["current"],
                                           "size": target.stat().st_size, "sha256": sha256(target)}
            if out is not None:
                out.append(str(target))
        path = backup_dir / f"backup-{stamp}.json"
        path.write_text(json.dumps(manifest, indent=1) + "\n")
        os.chmod(path, 0o600)
    except BaseException:
        # Half a pair is no backup: the dumps of this set go with the failure.
        for target in made:
            target.unlink(missing_ok=True)
        if out is not None:
            del out[len(out) - len(made):]
        raise
    manifest["manifest"] = str(path)
    if s3_uri:
        manifest["uploaded"] = [upload(target, s3_uri) for target in made] + [upload(path, s3_uri)]
        if out is not None:
            out.extend(manifest["uploaded"][:-1])
    return manifest


BACKUP_NAME = re.compile(r"^(?P<db>.+)-(?P<label>[0-9a-z]+)-(?P<stamp>\d{8}T\d{6}Z)\.(dump|sqlite)$")


def prune_backups(backup_dir, keep):
    """Keeps the `keep` newest backups of each database in backup_dir (0: all); other files stay."""
    by_db = {}
    for path in Path(backup_dir).glob("*") if Path(backup_dir).is_dir() else []:
        match = BACKUP_NAME.match(path.name)
        if match and path.is_file():
            by_db.setdefault(match["db"], []).append((match["stamp"], path))
    removed = []
    for backups in by_db.values():
        for _stamp, path in sorted(backups, reverse=True)[keep:] if keep > 0 else []:
            path.unlink()
            removed.append(str(path))
    remaining = {m["stamp"] for p in Path(backup_dir).glob("*") if (m := BACKUP_NAME.match(p.name))}
    for path in Path(backup_dir).glob("backup-*.json") if removed else []:
        if path.name[len("backup-"):-len(".json")] not in remaining:
            path.unlink()
            removed.append(str(path))
    return {"changed": bool(removed), "removed": sorted(removed),
            "kept": sum(min(len(b), keep) if keep > 0 else len(b) for b in by_db.values())}


def upload(path, s3_uri):
    import boto3

    bucket, _sep, prefix = s3_uri[len("s3://"):].partition("/")
    key = "/".join(p for p in (prefix.strip("/"), path.name) if p)
    client = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)
    client.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def journal(backup_dir, entry):
    """Appends one line to <backup-dir>/migrations.jsonl (root-only): the audit trail of every schema change."""
    log = Path(backup_dir) / "migrations.jsonl"
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(json.dumps(entry) + "\n")
    os.chmod(log, 0o600)


def interrupted(backup_dir):
    """The last migration that logged a phase but never `done` (stopped half-way), or None."""
    log = Path(backup_dir) / "migrations.jsonl"
    last = None
    for line in log.read_text().splitlines() if log.exists() else []:
        entry = json.loads(line)
        if "phase" in entry:
            last = None if entry["phase"] == "done" else entry
        elif entry.get("changed"):
            last = None
    return last


def migrate(args, out):
    """Fills `out` as it goes, so that a failure can still report the backups it made."""
    uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
    out.update({"changed": False, "backups": [], "upgraded": []})
    with migration_lock(uri, args.lock_timeout) as conn:
        before = status()  # again, under the lock: another host may have done it meanwhile
        out["before"] = before
        if before["downgrade"]:
            raise RuntimeError("the database schema is newer than this MLflow version: refusing to downgrade")
        if not before["needed"]:
            return out
        resumed = interrupted(args.backup_dir)
        if resumed:
            out["resumed"] = resumed
        run = {"run": new_stamp(), "mlflow_version": mlflow_version()}

        def phase(name, **extra):
            journal(args.backup_dir, {**run, "phase": name, **extra,
                                      "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})

        label = f"{(before['tracking']['current'] or 'empty')}"
        if args.backup and not before["tracking"]["empty"]:
            if conn is not None:  # PostgreSQL (the auth database is on the same server)
                out["pg_dump"] = check_pg_dump(conn, args.pg_dump)
            manifest = backup_pair(before, args.backup_dir, label, args.pg_dump, args.backup_s3_uri, out["backups"])
            out["backup_set"] = manifest["set"]
            phase("backed-up", backup_set=manifest["set"], before=before)
        if before["tracking"]["current"] != before["tracking"]["head"]:
            # The one and only `mlflow db upgrade` of the group (it initializes an empty database).
            mlflow_cli = str(Path(sys.executable).parent / "mlflow")
            try:
                proc = subprocess.run([mlflow_cli, "db", "upgrade", uri], capture_output=True, text=True, check=False,
                                      timeout=args.upgrade_timeout)
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"mlflow db upgrade did not finish within {args.upgrade_timeout} s (--upgrade-timeout) "
                                   "and was stopped") from exc
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
                raise RuntimeError(f"mlflow db upgrade failed:\n{tail}")
            out["upgraded"].append("tracking")
            phase("tracking-upgraded", revision=before["tracking"]["head"])
        if "auth" in before and before["auth"]["current"] != before["auth"]["head"]:
            from mlflow.server.auth.db.utils import migrate_if_needed
            from mlflow.store.db.utils import create_sqlalchemy_engine_with_retry

            engine = create_sqlalchemy_engine_with_retry(auth_db_uri())
            migrate_if_needed(engine, "head")
            engine.dispose()
            out["upgraded"].append("auth")
        out["changed"] = True
        out["after"] = status()
        out["mlflow_version"] = run["mlflow_version"]
        out["at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        phase("done", after=out["after"])
        journal(args.backup_dir, out)
    return out


def backup(args):
    uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
    state = status()
    if state["downgrade"] or state["needed"]:
        raise RuntimeError("the schema is not at this MLflow version's head (run the playbook to migrate it first): "
                           + json.dumps({k: v for k, v in state.items() if isinstance(v, dict)}))
    from sqlalchemy.engine import make_url

    if make_url(uri).get_backend_name() == "postgresql":
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            check_pg_dump(conn, args.pg_dump)
        engine.dispose()
    manifest = backup_pair(state, args.backup_dir, args.label, args.pg_dump, args.backup_s3_uri)
    return {"changed": True, **manifest}


def restore(args, admin):
    """Restores one backup set (both databases) into empty databases, or over them with --clean."""
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url

    tracking = make_url(os.environ["MLFLOW_BACKEND_STORE_URI"])
    if tracking.get_backend_name() != "postgresql":
        raise ValueError("restore is for PostgreSQL; a SQLite backup is a copy of the database file: stop the "
                         "servers and copy the backup set's files back")
    backup_dir = Path(args.backup_dir)
    manifest_path = backup_dir / f"backup-{args.set}.json"
    if not manifest_path.exists():
        sets = sorted(p.name[len("backup-"):-len(".json")] for p in backup_dir.glob("backup-*.json"))
        raise FileNotFoundError(f"no backup set {args.set} in {backup_dir} (sets there: {', '.join(sets) or 'none'})")
    manifest = json.loads(manifest_path.read_text())
    auth_uri = auth_db_uri()
    targets = {"tracking": args.tracking_db or tracking.database,
               "auth": args.auth_db or (make_url(auth_uri).database if auth_uri else None)}
    parts = [part for part in ("tracking", "auth") if part in manifest["databases"]]
    for part in parts:  # every file checked before anything is touched
        entry = manifest["databases"][part]
        if targets[part] is None:
            raise ValueError(f"the set has an {part} database but no target: give --{part}-db")
        if sha256(backup_dir / entry["file"]) != entry["sha256"]:
            raise ValueError(f"{entry['file']} does not match its checksum in {manifest_path.name}: not restoring")
    common = psycopg2_args(tracking)
    app, actions = tracking.username, []
    if admin is not None:
        conn = psycopg2.connect(user=admin["username"], password=admin["password"],
                                dbname=admin.get("maintenance_db") or "postgres", **common)
        conn.autocommit = True
        try:
            cur = conn.cursor()
            for part in parts:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (targets[part],))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(targets[part]), sql.Identifier(app)))
                    actions.append(f"created database {targets[part]}")
        finally:
            conn.close()
    pg_restore = str(Path(args.pg_dump).with_name("pg_restore")) if "/" in args.pg_dump else "pg_restore"
    for part in parts:
        target = targets[part]
        conn = psycopg2.connect(user=app, password=os.environ.get("PGPASSWORD", ""), dbname=target, **common)
        try:
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
            tables = cur.fetchone()[0]
        finally:
            conn.close()
        if tables and not args.clean:
            raise RuntimeError(f"database {target} is not empty ({tables} tables): restore into a new database "
                               "(--create), or stop every server and give --clean to replace its contents")
        cmd = [pg_restore, "--no-password", "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
               *(["--clean", "--if-exists"] if args.clean else []), *pg_conn_args(tracking), f"--dbname={target}",
               str(backup_dir / manifest["databases"][part]["file"])]
        proc = subprocess.run(cmd, env=pg_env(tracking), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"pg_restore of {manifest['databases'][part]['file']} into {target} failed "
                               f"(rolled back): {proc.stderr.strip()}")
        actions.append(f"restored {part} ({manifest['databases'][part]['revision']}) into {target}")
    return {"changed": True, "set": args.set, "mlflow_version": manifest["mlflow_version"], "actions": actions,
            "databases": {part: targets[part] for part in parts}}


def scram_verifier(password, iterations=4096):
    """The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5802/7677), so the password itself never
    reaches the server, its logs or pg_stat_activity."""
    import base64
    import hashlib
    import hmac

    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    salt64, stored64, server64 = (base64.b64encode(raw).decode() for raw in (salt, stored_key, server_key))
    return f"SCRAM-SHA-256${iterations}:{salt64}${stored64}:{server64}"


# What a role owns in a database that bootstrap hands over (a psycopg2 query: % is written %%): relations (not sequences owned by a
# column: they follow their table), schemas except the system ones, and types that are not a
# relation's row type or an array.
OWNED_OBJECTS = r"""
SELECT format('ALTER %%s %%I.%%I OWNER TO %%I', CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
              WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, n.nspname, c.relname, %(app)s)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
   AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%%'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass
                   AND d.deptype IN ('a', 'i') AND c.relkind = 'S')
UNION ALL
SELECT format('ALTER TYPE %%I.%%I OWNER TO %%I', n.nspname, t.typname, %(app)s)
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE t.typowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
   AND t.typtype IN ('e', 'd', 'c') AND (t.typrelid = 0 OR t.typtype <> 'c')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%%'
UNION ALL
SELECT format('ALTER SCHEMA %%I OWNER TO %%I', n.nspname, %(app)s)
  FROM pg_namespace n
 WHERE n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%%'
"""


def bootstrap(admin):
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url

    tracking = make_url(os.environ["MLFLOW_BACKEND_STORE_URI"])
    if tracking.get_backend_name() != "postgresql":
        raise ValueError("bootstrap needs a PostgreSQL backend store")
    app, app_password = tracking.username, os.environ.get("PGPASSWORD", "")
    if not app_password:
        raise ValueError("PGPASSWORD (mlflow_server_db_password) is empty")
    if app == admin["username"]:
        raise ValueError(f"the MLflow database role and the administrator are the same role ({app})")
    databases = [tracking.database] + ([make_url(auth_db_uri()).database] if auth_db_uri() else [])
    common = psycopg2_args(tracking)
    maintenance = admin.get("maintenance_db") or "postgres"
    actions = []

    def connect(user, password, dbname):
        conn = psycopg2.connect(user=user, password=password, dbname=dbname, **common)
        conn.autocommit = True
        return conn

    def can_log_in():
        try:
            connect(app, app_password, maintenance).close()
            return True
        except psycopg2.OperationalError as exc:
            if "password authentication failed" in str(exc) or ("role" in str(exc) and "does not exist" in str(exc)):
                return False
            raise

    admin_conn = connect(admin["username"], admin["password"], maintenance)
    try:
        cur = admin_conn.cursor()
        cur.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = %s", (app,))
        row = cur.fetchone()
        if row is None:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(app), sql.Literal(scram_verifier(app_password))))
            actions.append(f"created role {app}")
        else:
            if any(row):
                raise ValueError(f"role {app} has SUPERUSER, CREATEROLE or CREATEDB: MLflow's role must have none")
            if not can_log_in():
                cur.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.Identifier(app), sql.Literal(scram_verifier(app_password))))
                actions.append(f"set the password of role {app}")
        cur.execute("SELECT current_setting('server_version_num')::int >= 160000")
        member_check = "SET" if cur.fetchone()[0] else "MEMBER"
        cur.execute("SELECT pg_has_role(current_user, %s, %s)", (app, member_check))
        if not cur.fetchone()[0]:
            cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(app), sql.Identifier(admin["username"])))
            actions.append(f"granted {app} to {admin['username']}")
        for name in databases:
            cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,))
            row = cur.fetchone()
            if row is None:
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(app)))
                actions.append(f"created database {name}")
            elif row[0] != app:
                cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(app)))
                actions.append(f"database {name}: owner {row[0]} -> {app}")
    finally:
        admin_conn.close()
    for name in databases:
        conn = connect(admin["username"], admin["password"], name)
        try:
            cur = conn.cursor()
            cur.execute(OWNED_OBJECTS, {"app": app})
            statements = [r[0] for r in cur.fetchall()]
            for statement in statements:
                cur.execute(statement)
            if statements:
                actions.append(f"database {name}: {len(statements)} objects of {admin['username']} -> {app}")
        finally:
            conn.close()
    return {"changed": bool(actions), "actions": actions, "role": app, "databases": databases}


def admin_password():
    import sqlalchemy
    from werkzeug.security import check_password_hash, generate_password_hash

    username, password = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME"), os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD")
    uri = auth_db_uri()
    if not (uri and username and password):
        return {"changed": False, "detail": "basic-auth is off"}
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.begin() as conn:
            row = conn.execute(sqlalchemy.text("SELECT password_hash FROM users WHERE username = :u"), {"u": username}).first()
            if row is None:
                return {"changed": False, "detail": f"no user {username} yet: MLflow creates it on its first start"}
            if check_password_hash(row[0], password):
                return {"changed": False, "detail": f"the password of {username} is current"}
            conn.execute(sqlalchemy.text("UPDATE users SET password_hash = :h WHERE username = :u"),
                         {"h": generate_password_hash(password), "u": username})
    finally:
        engine.dispose()
    return {"changed": True, "detail": f"set the password of {username}"}


def mlflow_version():
    import mlflow

    return mlflow.__version__


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-file", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status")
    sub.add_parser("bootstrap", help="make MLflow's own database role; the administrator's credentials as JSON on stdin")
    sub.add_parser("admin-password", help="set the basic-auth admin's stored password to MLFLOW_AUTH_ADMIN_PASSWORD")
    mig = sub.add_parser("migrate")
    mig.add_argument("--backup-dir", required=True)
    mig.add_argument("--backup-s3-uri", default="")
    mig.add_argument("--no-backup", dest="backup", action="store_false")
    mig.add_argument("--pg-dump", default="pg_dump", help="the pg_dump that backs PostgreSQL up (default: on the PATH)")
    mig.add_argument("--lock-timeout", type=int, default=900, help="seconds to wait for another host's migration lock")
    mig.add_argument("--upgrade-timeout", type=int, default=3600, help="seconds mlflow db upgrade may take")
    bak = sub.add_parser("backup", help="back the tracking and auth databases up as one set, now")
    bak.add_argument("--backup-dir", required=True)
    bak.add_argument("--backup-s3-uri", default="")
    bak.add_argument("--pg-dump", default="pg_dump")
    bak.add_argument("--label", default="manual", type=lambda v: v if re.fullmatch(r"[0-9a-z]+", v) else parser.error(
        "--label: lowercase letters and digits only"))
    res = sub.add_parser("restore", help="restore a backup set (both databases); with --create, admin JSON on stdin")
    res.add_argument("--backup-dir", required=True)
    res.add_argument("--set", required=True, help="the set's stamp, as in backup-<STAMP>.json")
    res.add_argument("--tracking-db", default="")
    res.add_argument("--auth-db", default="")
    res.add_argument("--create", action="store_true", help="create the databases first, as the administrator (stdin)")
    res.add_argument("--clean", action="store_true", help="replace the contents of non-empty databases")
    res.add_argument("--pg-dump", default="pg_dump", help="pg_restore is taken from the same directory")
    prune = sub.add_parser("prune-backups")
    prune.add_argument("--backup-dir", required=True)
    prune.add_argument("--keep", type=int, required=True, help="newest backups kept per database (0: all)")
    args = parser.parse_args()
    load_env_file(args.env_file)
    partial = {}
    try:
        if args.command == "status":
            result = status()
        elif args.command == "bootstrap":
            result = bootstrap(json.load(sys.stdin))
        elif args.command == "admin-password":
            result = admin_password()
        elif args.command == "backup":
            result = backup(args)
        elif args.command == "restore":
            result = restore(args, json.load(sys.stdin) if args.create else None)
        elif args.command == "prune-backups":
            result = prune_backups(args.backup_dir, args.keep)
        else:
            result = migrate(args, partial)
    except Exception as exc:  # noqa: BLE001 - report every failure as JSON
        print(json.dumps({"failed": True, "error": str(exc), "backups": partial.get("backups", []),
                          **({"backup_set": partial["backup_set"]} if "backup_set" in partial else {})}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
