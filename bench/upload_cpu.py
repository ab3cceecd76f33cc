"""One artifact upload at a time on the bench stack, with the CPU seconds each component spent on it.

    .venv/bin/python bench/upload_cpu.py deployed direct deployed direct   # after bench/bench.sh up

deployed: the MLflow client through the front door (proxied mlflow-artifacts upload); direct: boto3
straight to the emulator's S3. Per upload: MB/s, this process's CPU (the client), and the CPU of the
stack's components (bench/run.py's component_cpu: the MLflow units, nginx, PostgreSQL, the emulator).
BENCH_UPLOAD_MIB sets the size (default 1024); the file is written once under BENCH_TMP (/var/tmp).
"""

import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py)


def main(paths):
    env = run.load_stack()
    size = int(os.environ.get("BENCH_UPLOAD_MIB", "1024")) << 20
    blob = Path(os.environ.get("BENCH_TMP", "/var/tmp")) / f"bench-upload-cpu-{size}"
    if not blob.exists() or blob.stat().st_size != size:
        with blob.open("wb") as f:
            for _ in range(size >> 20):
                f.write(os.urandom(1 << 20))
    cfg = env["cfg"]["deployed"]
    os.environ.update(cfg["env"])
    exp = run.setup_experiment(cfg, "upload-cpu")
    client = run.client_for(cfg, timeout=1800)
    for how in paths:
        cpu0, own0, t0 = run.component_cpu(env["ids"]), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        if how == "deployed":
            client.log_artifact(client.create_run(exp).info.run_id, str(blob))
        elif how == "direct":
            import boto3

            s3 = boto3.client("s3", endpoint_url=env["s3_env"]["MLFLOW_S3_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
            s3.upload_file(str(blob), "mlflow-artifacts", f"upload-cpu/{time.time()}")
        else:
            raise SystemExit(f"unknown path {how!r}: deployed or direct")
        seconds = time.perf_counter() - t0
        own1, cpu1 = resource.getrusage(resource.RUSAGE_SELF), run.component_cpu(env["ids"])
        client_cpu = own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime
        print(f"{how}: {size / 1e6 / seconds:.1f} MB/s in {seconds:.1f} s; client CPU {client_cpu:.1f} s;",
              run.cpu_delta(cpu0, cpu1), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["deployed", "direct"])
