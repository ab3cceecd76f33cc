#!/usr/bin/env bash
# The benchmark of bench/README.md on a stack of its own (containers bench-host, bench-pg,
# bench-moto on the network bench-net; molecule scenario bench/molecule/bench).
#   bench/bench.sh [ARGS...]     converge, run bench/run.py ARGS, destroy (also on failure)
#   bench/bench.sh up|down       only converge / only destroy (and forget the stack's secrets)
#   bench/bench.sh run [ARGS...] only bench/run.py, against a stack already up
# MOLECULE_PROJECT_DIRECTORY: the checkout whose roles are deployed (default: this one).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
export MOLECULE_PROJECT_DIRECTORY="${MOLECULE_PROJECT_DIRECTORY:-$root}"
export BENCH_STATE_DIR="${BENCH_STATE_DIR:-$here/.state}"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$root/ansible.cfg}"
mkdir -p "$BENCH_STATE_DIR"
chmod 700 "$BENCH_STATE_DIR"
# cwd bench/: molecule finds the scenario under bench/molecule/, never among molecule/*.
cd "$here"

# Section 4 (the UI) drives Debian's chromium with Playwright: both only for the benchmark,
# installed on first use (never by `make setup`: the tests do not need them).
deps() {
  python -c "import playwright" 2>/dev/null || python -m pip install -q "playwright>=1.40"
  command -v chromium >/dev/null 2>&1 || {
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq chromium >/dev/null
    else echo "bench: section 4 needs Debian's chromium (apt-get install chromium) or BENCH_CHROMIUM=path" >&2; fi
  }
}

up() { molecule converge -s bench; }
down() { molecule destroy -s bench && rm -rf "$BENCH_STATE_DIR"; }

case "${1:-}" in
  up) up ;;
  down) down ;;
  run) shift; deps; python "$here/run.py" "$@" ;;
  *) trap down EXIT; deps; up; python "$here/run.py" "$@" ;;
esac
