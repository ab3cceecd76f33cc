#!/usr/bin/env bash
# Create .venv with the pinned control-node packages (requirements.txt).
# ansible-core 2.21 needs Python >= 3.12: look for python3.13, python3.12, then pyenv.
# Re-running is cheap: the venv is rebuilt only when requirements.txt changes.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$top/.venv}
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$top/requirements.txt" | cut -d' ' -f1)

log() { printf '[setup-venv] %s\n' "$*" >&2; }

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

ok() { "$@" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
# The interpreter behind a candidate, resolved: with .venv/bin first in PATH (the Makefile puts
# it there), `python3.13` is the old venv's own link, which the rebuild below deletes.
real() { "$1" -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))'; }

find_python() {
  local c v
  for c in "${PYTHON:-}" python3.13 python3.12 python3; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && ok "$c" && { real "$c"; return; }
  done
  if command -v pyenv >/dev/null 2>&1; then
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9])(\.[0-9]+)?$' | sort -Vr); do
      c=$(PYENV_VERSION=$v pyenv which python 2>/dev/null) && ok "$c" && { real "$c"; return; }
    done
  fi
  return 1
}

py=$(find_python) || {
  log "ERROR: Python >= 3.12 is required (ansible-core 2.21) and none was found."
  log "Install python3.12 or python3.13 (or a pyenv version), or set PYTHON=/path/to/python3.12."
  exit 1
}
log "creating $venv with $py ($("$py" --version 2>&1))"
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$top/requirements.txt"
echo "$want" >"$stamp"
log "ready: $venv"
