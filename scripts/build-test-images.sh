#!/usr/bin/env bash
# Build the test-host images molecule runs on, without any registry:
# - Debian 12 and 13 with systemd as PID 1, from debootstrap + `docker import`
#   (scripts/images/debian-rootfs.sh), trusting this machine's extra CA certificates
#   (TLS-intercepting proxies);
# - mlflow-ansible-test/moto (the AWS API emulator, moto_server on port 5000) and
#   mlflow-ansible-test/postgres (Debian's PostgreSQL under systemd), FROM Debian 12.
# Every image is tagged with a hash of its recipe, so a second run reuses it, and
# with a stable tag (debian:12, debian:13, moto:latest, postgres:latest) that the
# molecule scenarios use.
#
#   MLFLOW_TEST_DISTROS   default "debian12 debian13"; add "al2023" where a registry
#                         is reachable (scripts/images/al2023.Dockerfile).
#   DEBIAN_MIRROR         default http://deb.debian.org/debian
#   EXTRA_CA_DIR          default /usr/local/share/ca-certificates
#   MLFLOW_TEST_IMAGE_REPO  default mlflow-ansible-test
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)/images
repo=${MLFLOW_TEST_IMAGE_REPO:-mlflow-ansible-test}
distros=${MLFLOW_TEST_DISTROS:-debian12 debian13}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ca_dir=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}

log() { printf '[build-test-images] %s\n' "$*" >&2; }

hash_of() {  # recipe text on stdin plus the CA files -> short hash
  { cat; find "$ca_dir" -type f -name '*.crt' 2>/dev/null | sort | xargs -r cat; } \
    | sha256sum | cut -c1-12
}

# ensure TAG STABLE_TAG BUILD_COMMAND...: build TAG unless it exists, then tag it STABLE_TAG.
ensure() {
  local tag=$1 stable=$2; shift 2
  if docker image inspect "$tag" >/dev/null 2>&1; then
    log "reusing $tag"
  else
    log "building $tag"
    "$@"
    log "built $tag"
  fi
  docker tag "$tag" "$stable"
}

debian() {  # $1 = suite, $2 = major version
  local h
  h=$( (echo "$1 $mirror"; cat "$here/debian-rootfs.sh") | hash_of)
  ensure "$repo/debian:$2-$h" "$repo/debian:$2" \
    "$here/debian-rootfs.sh" "$1" "$repo/debian:$2-$h" "$mirror" "$ca_dir"
}

docker_build() {  # $1 = tag, $2 = Dockerfile, build args follow
  local tag=$1 file=$2 ctx; shift 2
  ctx=$(mktemp -d)
  mkdir "$ctx/extra-ca"
  find "$ca_dir" -type f -name '*.crt' -exec cp {} "$ctx/extra-ca/" \; 2>/dev/null || true
  docker build -q "$@" -t "$tag" -f "$file" "$ctx" >/dev/null
  rm -rf "$ctx"
}

al2023() {
  local h
  h=$(hash_of <"$here/al2023.Dockerfile")
  ensure "$repo/amazonlinux:2023-$h" "$repo/amazonlinux:2023" \
    docker_build "$repo/amazonlinux:2023-$h" "$here/al2023.Dockerfile"
}

service_image() {  # $1 = name of scripts/images/NAME.Dockerfile; $2 = Debian major (default 12), $3 = stable tag
  local major=${2:-12} stable=${3:-latest} base h
  base=$(docker image inspect --format '{{.Id}}' "$repo/debian:$major")
  h=$( (echo "$base"; cat "$here/$1.Dockerfile") | hash_of)
  ensure "$repo/$1:$h" "$repo/$1:$stable" \
    docker_build "$repo/$1:$h" "$here/$1.Dockerfile" --build-arg "BASE=$repo/debian:$major"
}

run_parallel() {  # run each argument (a function call) in the background, fail if any fails
  local pids=() rc=0 p
  for job in "$@"; do $job & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

# debootstrap is installed here, once: the parallel builders below would otherwise
# race for the dpkg lock ("Could not get lock /var/lib/dpkg/lock-frontend").
need_debootstrap() {
  command -v debootstrap >/dev/null 2>&1 && return 0
  [ "$(id -u)" -eq 0 ] || { log "ERROR: debootstrap is missing (apt-get install debootstrap)"; exit 1; }
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
}

jobs=()
for d in $distros; do
  case $d in
    debian12) jobs+=("debian bookworm 12") ;;
    debian13) jobs+=("debian trixie 13") ;;
    al2023) jobs+=("al2023") ;;
    *) log "ERROR: unknown distro '$d' in MLFLOW_TEST_DISTROS (known: debian12 debian13 al2023)"; exit 2 ;;
  esac
done
# The service images need debian:12 and debian:13 even when only other distros are asked for.
case " $distros " in *" debian12 "*) ;; *) jobs+=("debian bookworm 12") ;; esac
case " $distros " in *" debian13 "*) ;; *) jobs+=("debian trixie 13") ;; esac
case " ${jobs[*]} " in *" debian "*) need_debootstrap ;; esac
run_parallel "${jobs[@]}"
# postgres: Debian 12's PostgreSQL 15; postgres:17 (Debian 13) stands in for RDS at its default
# major version in molecule/e2e; ec2host (Debian 13 + sshd + cloud-init) plays the EC2 instance there.
run_parallel "service_image moto" "service_image postgres" "service_image postgres 13 17" "service_image ec2host 13 13"
