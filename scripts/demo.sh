#!/usr/bin/env bash
# The whole product on this machine, exactly as the end-to-end test runs it
# (molecule/e2e): the real site.yml against the AWS API emulator (moto), with a
# PostgreSQL 17 container standing in for RDS and a Debian 13 container that boots with
# cloud-init standing in for the EC2 instance, reached over SSH like one.
#
#   scripts/demo.sh up     create the containers (once), run site.yml (re-runnable: changed=0)
#   scripts/demo.sh down   remove the containers and the demo's state
#
# The front door is https://172.30.254.20 (the containers' docker network, this machine
# only). `make test` runs the same scenario and replaces a running demo.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export PATH="$top/.venv/bin:$PATH" ANSIBLE_CONFIG="$top/ansible.cfg"

log() { printf '[demo] %s\n' "$*" >&2; }

up() {
  log "creating the emulator, the database and the 'EC2 instance' containers (once)"
  molecule create -s e2e
  log "running site.yml (provision on the emulator, configure the instance over SSH)"
  molecule converge -s e2e
  local eph
  # molecule's state directory of the scenario (deterministic for this checkout).
  eph=$(ls -td "${HOME}"/.ansible/tmp/molecule.*.e2e 2>/dev/null | head -1)
  cat <<DONE

The admin password is in $eph/secrets/admin (the demo's "vault"); the client settings are
printed above by site.yml. For example:

  export MLFLOW_TRACKING_URI=https://172.30.254.20 MLFLOW_TRACKING_USERNAME=admin
  export MLFLOW_TRACKING_PASSWORD="\$(cut -d' ' -f1 $eph/secrets/admin)"
  export MLFLOW_TRACKING_SERVER_CERT_PATH=$eph/control/front-door-ca.pem
  .venv/bin/python examples/iris_registry.py

Re-run 'make demo' to converge again (changed=0); 'make demo-destroy' removes it.
DONE
}

down() {
  molecule destroy -s e2e
  log "demo containers removed"
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
