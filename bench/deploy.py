#!/usr/bin/env python3
"""Section 5 of issue 10's benchmark: deploy times of the real site.yml on the demo stack.

The demo stack is molecule/e2e (moto as AWS, PostgreSQL 17 as RDS, a Debian 13 container booting
with cloud-init as the EC2 instance, reached over SSH): `make demo` is the same thing. Measured:

  cold       the containers created from nothing, then site.yml (provision + configure)
  site.yml   a no-op re-run of site.yml (molecule converge, as `make demo` re-runs it)
  configure  a no-op run of playbooks/configure.yml alone, as a user runs it on a later day

each no-op run --repeats times, with its PLAY RECAP and the slowest tasks (ansible.posix.profile_tasks).
Then where a no-op's time goes:

  module runs  one more configure.yml no-op with -vvv: how many modules ran, on which host
  floor        bench/deploy_floor.yml: 20 tasks of each kind on the instance (the control node
               alone, the connection alone, Python + ansible-core's module wrapper, a no-op file
               task, and a file task looping over 20 items), median seconds per task

Writes bench/results/<UTC date-time>-deploy.{json,md}. It replaces a running demo (and `make test`
replaces it): run it on its own, e.g. `make bench-deploy`. --keep leaves the demo up.
"""

import argparse
import datetime as dt
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT / "molecule" / "e2e" / "tests"))
sys.path.append(str(ROOT / "tests"))  # after e2e tests/: its conftest is the one imported below
from pins import MLFLOW_VERSION  # noqa: E402  task names carry it; the results say "(the pin)" (test_version_pin)
_had = "MOLECULE_EPHEMERAL_DIRECTORY" in os.environ
os.environ.setdefault("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")  # conftest reads it at import
from conftest import AWS_ENV  # noqa: E402  the environment molecule gives the playbooks
if not _had:
    del os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]  # molecule would take it for the scenario's

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TASK_TIME = re.compile(r"^(?P<task>\S.*?) -{3,} (?P<s>\d+\.\d+)s$")
RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$")


def env():
    e = dict(os.environ)
    e["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{e.get('PATH', '')}"
    e["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    e["ANSIBLE_FORCE_COLOR"] = "0"
    e["ANSIBLE_NOCOLOR"] = "1"
    e["NO_COLOR"] = "1"
    return e


def clean(text):
    return [re.sub(r"^\s*│\s?", "", ANSI.sub("", line)).rstrip() for line in text.splitlines()]


def timed(name, argv, extra_env=None, log_dir=None, all_tasks=False, count_modules=False):
    e = env()
    e.update(extra_env or {})
    t0 = time.monotonic()
    res = subprocess.run(argv, cwd=ROOT, env=e, capture_output=True, text=True, check=False)
    seconds = round(time.monotonic() - t0, 1)
    lines = [line.replace(MLFLOW_VERSION, "(the pin)") for line in clean(res.stdout + "\n" + res.stderr)]
    if log_dir:
        (log_dir / f"{name}.log").write_text("\n".join(lines) + "\n")
    recap = {}
    for line in lines:
        m = RECAP.match(line.strip())
        if m:
            recap[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    task_times = [{"task": m.group("task"), "s": float(m.group("s"))} for m in map(TASK_TIME.match, lines) if m]
    row = {"name": name, "seconds": seconds, "rc": res.returncode, "recap": recap,
           "slowest": sorted(task_times, key=lambda t: -t["s"])[:10]}
    if all_tasks:
        row["tasks"] = task_times  # in the order they ran (PROFILE_TASKS_SORT_ORDER=none)
    if count_modules:
        row["module_runs"] = module_runs(lines)
    print(f"{name}: {seconds} s rc={res.returncode} changed="
          f"{sum(h.get('changed', 0) for h in recap.values())} tasks ok={sum(h.get('ok', 0) for h in recap.values())}",
          flush=True)
    if res.returncode:
        print("\n".join(lines[-40:]), file=sys.stderr)
        raise SystemExit(f"{name} failed (rc={res.returncode})")
    return row


def module_runs(lines):
    """Module runs of a -vvv log, per host and module: each "Using module file" line is followed
    by the connection's first line for the host it runs on ("<host> ESTABLISH ...")."""
    runs, pending = {}, None
    for line in lines:
        m = re.match(r"^Using module file \S*/(\w+)\.py$", line.strip())
        if m:
            pending = m.group(1)
            continue
        h = re.match(r"^<([^>]+)> ", line.strip())
        if h and pending:
            per_host = runs.setdefault(h.group(1), {})
            per_host[pending] = per_host.get(pending, 0) + 1
            pending = None
    return {host: dict(sorted(mods.items(), key=lambda kv: -kv[1])) for host, mods in runs.items()}


def floor(inventory, molecule_env, log_dir):
    """bench/deploy_floor.yml: what one task costs on the instance, by layer (median of 20 each)."""
    row = timed("floor: 20 tasks of each kind on the instance",
                ["ansible-playbook", "-i", inventory, str(HERE / "deploy_floor.yml")],
                extra_env={**molecule_env, "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "1000", "PROFILE_TASKS_SORT_ORDER": "none"},
                log_dir=log_dir, all_tasks=True)
    per_kind = {}
    for t in row.pop("tasks"):
        m = re.match(r"^Floor (\w+)$", t["task"])
        if m:
            per_kind.setdefault(m.group(1), []).append(t["s"])
        elif t["task"].startswith("File-loop"):
            per_kind["file, one task looping over 20 items (per item)"] = [round(t["s"] / 20, 3)]
    row["per_task_s"] = {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
                         for k, v in per_kind.items()}
    return row


def ephemeral():
    dirs = sorted(glob.glob(os.path.expanduser("~/.ansible/tmp/molecule.*.e2e")), key=os.path.getmtime)
    if not dirs:
        raise SystemExit("no molecule state directory for e2e")
    return Path(dirs[-1])


def summarize(result):
    lines = [f"# Deploy times {result['started']} (commit {result['commit'][:10]})", "",
             f"{result['cpus']} CPUs; load at start {result['load_at_start']}. The demo stack (molecule/e2e): "
             "moto as AWS, PostgreSQL 17 as RDS, a cloud-init container as the EC2 instance over SSH.", "",
             "| run | seconds | changed | tasks (ok) |", "|---|---:|---:|---:|"]
    for r in result["runs"]:
        lines.append(f"| {r['name']} | {r['seconds']:,.1f} | {sum(h.get('changed', 0) for h in r['recap'].values())} "
                     f"| {sum(h.get('ok', 0) for h in r['recap'].values())} |")
    if result.get("module_runs"):
        lines += ["", "Module runs of one configure.yml no-op (run again with -vvv), per host:", "",
                  "| host | module runs | the most frequent |", "|---|---:|---|"]
        for host, mods in result["module_runs"].items():
            top = ", ".join(f"{m} {n}" for m, n in list(mods.items())[:6])
            lines.append(f"| {host} | {sum(mods.values())} | {top} |")
    if result.get("floor"):
        lines += ["", "One task on the instance, by layer (`bench/deploy_floor.yml`, 20 of each, interleaved):", "",
                  "| kind | median s | min | max |", "|---|---:|---:|---:|"]
        for kind, t in result["floor"]["per_task_s"].items():
            lines.append(f"| {kind} | {t['median']:.2f} | {t['min']:.2f} | {t['max']:.2f} |")
    for r in result["runs"]:
        if r["slowest"]:
            lines += ["", f"Slowest tasks of `{r['name']}`:", ""]
            lines += [f"- {t['s']:.1f} s {t['task']}" for t in r["slowest"][:6]]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="no-op runs of each kind")
    ap.add_argument("--keep", action="store_true", help="leave the demo up")
    ap.add_argument("--reuse", action="store_true",
                    help="a demo is up (make demo): only the no-op runs and what follows (with --repeats 0, only what follows)")
    args = ap.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    stem = started.strftime("%Y-%m-%dT%H%MZ") + "-deploy"
    RESULTS.mkdir(exist_ok=True)
    result = {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "cpus": os.cpu_count(), "load_at_start": Path("/proc/loadavg").read_text().split()[:3], "runs": [],
    }
    logs = HERE / ".state" / "deploy-logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        if not args.reuse:
            subprocess.run(["molecule", "destroy", "-s", "e2e"], cwd=ROOT, env=env(), capture_output=True, check=False)
            create = timed("create", ["molecule", "create", "-s", "e2e"], log_dir=logs)
            converge = timed("converge", ["molecule", "converge", "-s", "e2e"], log_dir=logs)
            result["runs"].append({**converge, "name": "cold: containers + prepare + site.yml",
                                   "seconds": round(create["seconds"] + converge["seconds"], 1),
                                   "parts": {"create": create["seconds"], "prepare + site.yml": converge["seconds"]}})
        state = ephemeral()
        # What molecule gives the verifier (the e2e tests run configure.yml the same way): the
        # scenario's inventory reads its state directory (SSH key, CA) from these.
        molecule_env = {**AWS_ENV, "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
                        "MOLECULE_EPHEMERAL_DIRECTORY": str(state), "MOLECULE_PROJECT_DIRECTORY": str(ROOT),
                        "MOLECULE_SCENARIO_DIRECTORY": str(ROOT / "molecule" / "e2e"),
                        "MOLECULE_FILE": str(ROOT / "molecule" / "e2e" / "molecule.yml"), "MOLECULE_SCENARIO_NAME": "e2e"}
        configure = ["ansible-playbook", "-i", str(state / "inventory"), "playbooks/configure.yml"]
        for i in range(args.repeats):
            result["runs"].append(timed(f"site.yml no-op #{i + 1}", ["molecule", "converge", "-s", "e2e"], log_dir=logs))
            result["runs"].append(timed(f"configure.yml no-op #{i + 1}", configure, extra_env=molecule_env, log_dir=logs))
        # Where a no-op's time goes: the module runs of one more configure.yml no-op (-vvv: its
        # time is not comparable), and what one task of each kind costs on the instance.
        verbose = timed("configure.yml no-op, -vvv (counts the module runs)", configure + ["-vvv"],
                        extra_env=molecule_env, log_dir=logs, count_modules=True)
        result["module_runs"] = verbose.pop("module_runs")
        result["module_runs_run"] = {k: verbose[k] for k in ("seconds", "recap")}
        result["floor"] = floor(str(state / "inventory"), molecule_env, logs)
    finally:
        result["load_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / f"{stem}.md").write_text(summarize(result))
        if not (args.keep or args.reuse):
            subprocess.run(["molecule", "destroy", "-s", "e2e"], cwd=ROOT, env=env(), capture_output=True, check=False)
    print(summarize(result))


if __name__ == "__main__":
    main()
