#!/usr/bin/env bash
# The whole product on this machine: the AWS API emulator (moto) plays AWS, Docker
# containers play the EC2 host and the RDS database.
#
#   scripts/demo.sh up     start the containers, run site.yml against them (re-runnable)
#   scripts/demo.sh down   remove the demo containers and network (.demo/ keeps the secrets)
#
# Ports on loopback only: https://localhost:8443 (the front door), 127.0.0.1:4566 (moto).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export PATH="$top/.venv/bin:$PATH" ANSIBLE_CONFIG="$top/ansible.cfg"
repo=${MLFLOW_TEST_IMAGE_REPO:-mlflow-ansible-test}
net=mlflow-demo
https_port=${DEMO_HTTPS_PORT:-8443}
moto_port=${DEMO_MOTO_PORT:-4566}
state="$top/.demo"
# The emulator takes any credentials; make sure nothing can reach real AWS.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=eu-west-1 \
  AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true

log() { printf '[demo] %s\n' "$*" >&2; }

systemd_flags=(--cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock --tmpfs /tmp)

container() {  # name image [docker run args...]: start it unless it runs already
  local name=$1 image=$2; shift 2
  if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ]; then
    return
  fi
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker run -d --name "$name" --hostname "$name" --network "$net" "$@" "$image" >/dev/null
  log "started $name"
}

secret() {  # file: a random secret generated once and kept in .demo/
  local f="$state/$1"
  [ -s "$f" ] || (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$f")
  cat "$f"
}

up() {
  mkdir -p "$state" && chmod 700 "$state"
  docker network inspect "$net" >/dev/null 2>&1 || docker network create "$net" >/dev/null
  container mlflow-demo-moto "$repo/moto:latest" -p "127.0.0.1:$moto_port:5000" \
    -e MOTO_IAM_LOAD_MANAGED_POLICIES=true
  container mlflow-demo-db "$repo/postgres:latest" "${systemd_flags[@]}"
  container mlflow-demo-server "$repo/debian:12" "${systemd_flags[@]}" -v /var/lib/swap \
    -p "127.0.0.1:$https_port:443"
  (umask 077; cat >"$state/secrets.yml" <<SECRETS
---
mlflow_server_auth_admin_password: "$(secret admin-password)"
mlflow_demo_analyst_password: "$(secret analyst-password)"
SECRETS
  )
  log "running site.yml (provision on the emulator, configure the containers)"
  ansible-playbook -i inventory/demo site.yml -e @"$state/secrets.yml" "$@"
  cat <<DONE

MLflow is up behind its TLS front door:   https://localhost:$https_port
  user: admin   password: in $state/admin-password
  CA to trust:  $state/front-door-ca.pem

  export MLFLOW_TRACKING_URI=https://localhost:$https_port
  export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD="\$(cat $state/admin-password)"
  export MLFLOW_TRACKING_SERVER_CERT_PATH=$state/front-door-ca.pem
  export MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false  # the emulator's name resolves in containers only
  .venv/bin/python examples/iris_registry.py

Re-run 'make demo' to converge again (changed=0); 'make demo-destroy' removes it.
DONE
}

down() {
  docker rm -f mlflow-demo-server mlflow-demo-db mlflow-demo-moto >/dev/null 2>&1 || true
  docker network rm "$net" >/dev/null 2>&1 || true
  log "demo containers removed (secrets and CA kept in $state)"
}

case ${1:-up} in
  up) shift || true; up "$@" ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
