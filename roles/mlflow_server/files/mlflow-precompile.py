# Managed by Ansible (role mlflow_server). Run as root with a venv's python, once per venv.
"""Byte-compile the modules an MLflow server loads, then write MARKER.

  VENV/bin/python mlflow-precompile.py MARKER

The role installs MLflow with `pip install --no-compile`: pip would otherwise compile all of the
9,000 or so modules it installs (about 35 s of one CPU on a 2-vCPU instance), most of which a
tracking server never loads (scikit-learn, matplotlib, most of pandas and SciPy). The service user
cannot write into the venv, so a module left uncompiled here is compiled in memory whenever a
worker loads it: a slower start, nothing else.

Two steps, both as the server would load its code:
  1. import the server's apps (the CLI, the Flask and FastAPI apps, basic-auth when installed,
     the stores, S3 and PostgreSQL clients): Python writes the bytecode of everything they load,
     including the parts of pandas, NumPy and SciPy they use;
  2. compile whole the packages a server loads lazily, request by request (MLflow itself, the
     GraphQL stack of the UI, OpenTelemetry for traces, uvicorn's protocol modules, ...).
"""

import compileall
import importlib
import importlib.util
import os
import sys
import warnings

# Imported as the server imports them. Only the first is required: the others may not exist in
# every MLflow version or be installed (extras), and are skipped with a note.
SERVER_MODULES = [
    "mlflow.server",
    "mlflow.cli",
    "mlflow.server.handlers",
    "mlflow.server.fastapi_app",
    "mlflow.server.auth",  # the auth extra (Flask-WTF)
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.store.artifact.s3_artifact_repo",
    "boto3",
    "psycopg2",
    "prometheus_flask_exporter.multiprocess",  # --expose-prometheus
]

# Compiled whole (where installed): what a server loads while it serves.
PACKAGES = [
    "mlflow", "uvicorn", "h11", "anyio", "starlette", "fastapi", "flask", "flask_cors", "werkzeug",
    "graphql", "graphene", "graphql_relay", "opentelemetry", "sqlalchemy", "alembic", "boto3",
    "botocore", "s3transfer", "psycopg2", "prometheus_client", "prometheus_flask_exporter",
]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    marker = sys.argv[1]
    warnings.simplefilter("ignore")  # the imported modules' deprecation warnings
    for name in SERVER_MODULES:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001  a warm-up: anything but the server itself may be missing
            if name == SERVER_MODULES[0]:
                sys.exit(f"{name}: {err}")
            print(f"skipped {name}: {err}")
    failed = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for path in spec.submodule_search_locations:
            # workers=0: one process per CPU; quiet=1: errors only. pip ignores what does not
            # compile (e.g. templates named *.py); so does this, after saying so.
            if not compileall.compile_dir(path, quiet=1, workers=0):
                failed.append(name)
    if failed:
        print(f"some files did not compile in: {', '.join(failed)}")
    loaded = sum(1 for m in list(sys.modules.values()) if getattr(m, "__file__", None))
    tmp = f"{marker}.tmp"
    with open(tmp, "w") as f:
        f.write(f"modules loaded by the server's imports: {loaded}\npackages compiled whole: {' '.join(PACKAGES)}\n")
    os.replace(tmp, marker)
    print(f"compiled: {loaded} modules loaded by the server's imports, and the packages it loads lazily")
    return 0


if __name__ == "__main__":
    sys.exit(main())
