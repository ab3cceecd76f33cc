#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`.
# On Debian/Ubuntu as root it installs docker.io and starts dockerd when none runs
# (no systemd as PID 1 is assumed: dockerd is started in the background).
# Anywhere else it stops and says what is missing.
set -euo pipefail

log() { printf '[ensure-docker] %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  log "ERROR: no Docker engine answers 'docker info' and this is not root."
  log "Start Docker (or add your user to the 'docker' group) and run again."
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if [ -r /etc/os-release ] && grep -qiE '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release; then
    log "installing docker.io from the distribution archive"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
  else
    log "ERROR: no Docker engine and this is not Debian/Ubuntu: install Docker Engine and run again."
    exit 1
  fi
fi

# A running systemd can start it the normal way.
if [ -d /run/systemd/system ] && systemctl start docker >/dev/null 2>&1; then
  :
else
  log "starting dockerd in the background (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
fi

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    log "Docker engine is up"
    exit 0
  fi
  sleep 1
done
log "ERROR: dockerd did not answer within 60 s; see /var/log/dockerd.log"
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1
