#!/usr/bin/env python3
# Managed by Ansible (role mlflow_server). Runs with the venv's python as root.
"""Check and migrate the MLflow schema (tracking and basic-auth databases).

  mlflow-dbctl.py --env-file FILE status
  mlflow-dbctl.py --env-file FILE migrate --backup-dir DIR [--backup-s3-uri s3://b/p] [--no-backup]
                 [--pg-dump PATH]

Settings (backend URI, PGPASSWORD, auth ini, S3 endpoint) come from the systemd environment
file, so no secret ever appears on a command line. `migrate` holds a lock (a PostgreSQL
advisory lock, or a file lock next to the SQLite file) so that only one host of a group
migrates; it backs the databases up, then runs `mlflow db upgrade` once, and appends what it did to
<backup-dir>/migrations.jsonl. Output is one JSON object on stdout, without secrets.

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


def revisions(uri, alembic_cfg, version_table="alembic_version"):
    import sqlalchemy
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn, opts={"version_table": version_table}).get_current_revision()
            tables = sqlalchemy.inspect(conn).get_table_names()
    finally:
        engine.dispose()
    script = ScriptDirectory.from_config(alembic_cfg)
    head = script.get_current_head()
    known = True
    if current is not None:
        try:
            known = script.get_revision(current) is not None
        except Exception:  # noqa: BLE001 - alembic raises several types for unknown revisions
            known = False
    return {"current": current, "head": head, "empty": not tables, "known": known}


def status():
    from mlflow.store.db.utils import _get_alembic_config

    uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
    result = {"tracking": revisions(uri, _get_alembic_config(uri))}
    auth_uri = auth_db_uri()
    if auth_uri:
        from mlflow.server.auth.db.utils import _get_alembic_config as auth_alembic_config

        result["auth"] = revisions(auth_uri, auth_alembic_config(auth_uri), "alembic_version_auth")
    result["needed"] = any(r["current"] != r["head"] for r in result.values() if isinstance(r, dict))
    result["downgrade"] = any(not r["known"] for r in result.values() if isinstance(r, dict))
    return result


@contextlib.contextmanager
def migration_lock(uri):
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if url.get_backend_name() == "sqlite":
        lock_path = Path(url.database + ".migrate.lock")
        with lock_path.open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield None
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:id)"), {"id": LOCK_ID})
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


def backup_one(uri, backup_dir, label, pg_dump="pg_dump"):
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if url.get_backend_name() == "sqlite":
        import sqlite3

        target = backup_dir / f"{Path(url.database).stem}-{label}-{stamp}.sqlite"
        src = sqlite3.connect(url.database)
        dst = sqlite3.connect(target)
        with dst:
            src.backup(dst)
        src.close()
        dst.close()
    else:
        target = backup_dir / f"{url.database}-{label}-{stamp}.dump"
        env = dict(os.environ)
        for key, var in (("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT")):
            if key in url.query:
                env[var] = url.query[key]
        cmd = [pg_dump, "--format=custom", "--no-password", f"--file={target}",
               f"--host={url.host}", f"--port={url.port or 5432}", f"--username={url.username}", url.database]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"pg_dump of {url.database} failed: {proc.stderr.strip()}")
    os.chmod(target, 0o600)
    return target


def upload(path, s3_uri):
    import boto3

    bucket, _sep, prefix = s3_uri[len("s3://"):].partition("/")
    key = "/".join(p for p in (prefix.strip("/"), path.name) if p)
    client = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)
    client.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def migrate(args, out):
    """Fills `out` as it goes, so that a failure can still report the backups it made."""
    uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
    out.update({"changed": False, "backups": [], "upgraded": []})
    with migration_lock(uri) as conn:
        before = status()  # again, under the lock: another host may have done it meanwhile
        out["before"] = before
        if before["downgrade"]:
            raise RuntimeError("the database schema is newer than this MLflow version: refusing to downgrade")
        if not before["needed"]:
            return out
        label = f"{(before['tracking']['current'] or 'empty')}"
        if args.backup and not before["tracking"]["empty"]:
            if conn is not None:  # PostgreSQL (the auth database is on the same server)
                out["pg_dump"] = check_pg_dump(conn, args.pg_dump)
            targets = [backup_one(uri, Path(args.backup_dir), label, args.pg_dump)]
            if "auth" in before and not before["auth"]["empty"]:
                targets.append(backup_one(auth_db_uri(), Path(args.backup_dir), before["auth"]["current"] or "empty",
                                          args.pg_dump))
            for target in targets:
                out["backups"].append(str(target))
                if args.backup_s3_uri:
                    out["backups"].append(upload(target, args.backup_s3_uri))
        if before["tracking"]["current"] != before["tracking"]["head"]:
            # The one and only `mlflow db upgrade` of the group (it initializes an empty database).
            mlflow_cli = str(Path(sys.executable).parent / "mlflow")
            proc = subprocess.run([mlflow_cli, "db", "upgrade", uri], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
                raise RuntimeError(f"mlflow db upgrade failed:\n{tail}")
            out["upgraded"].append("tracking")
        if "auth" in before and before["auth"]["current"] != before["auth"]["head"]:
            from mlflow.server.auth.db.utils import migrate_if_needed
            from mlflow.store.db.utils import create_sqlalchemy_engine_with_retry

            engine = create_sqlalchemy_engine_with_retry(auth_db_uri())
            migrate_if_needed(engine, "head")
            engine.dispose()
            out["upgraded"].append("auth")
        out["changed"] = True
        out["after"] = status()
        out["mlflow_version"] = mlflow_version()
        out["at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        # An audit trail of every schema change, next to the backups (root-only).
        log = Path(args.backup_dir) / "migrations.jsonl"
        log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with log.open("a") as fh:
            fh.write(json.dumps(out) + "\n")
        os.chmod(log, 0o600)
    return out


def mlflow_version():
    import mlflow

    return mlflow.__version__


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-file", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status")
    mig = sub.add_parser("migrate")
    mig.add_argument("--backup-dir", required=True)
    mig.add_argument("--backup-s3-uri", default="")
    mig.add_argument("--no-backup", dest="backup", action="store_false")
    mig.add_argument("--pg-dump", default="pg_dump", help="the pg_dump that backs PostgreSQL up (default: on the PATH)")
    args = parser.parse_args()
    load_env_file(args.env_file)
    partial = {}
    try:
        result = status() if args.command == "status" else migrate(args, partial)
    except Exception as exc:  # noqa: BLE001 - report every failure as JSON
        print(json.dumps({"failed": True, "error": str(exc), "backups": partial.get("backups", [])}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
