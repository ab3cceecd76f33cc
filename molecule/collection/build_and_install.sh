#!/usr/bin/env bash
# Dependency step of the collection scenario: what a user of the collection does, in an
# empty directory outside the repository.
#   1. ansible-galaxy collection build        -> WORKDIR/dist/mlflow_aws-mlflow-<version>.tar.gz
#   2. ansible-galaxy collection install      -> WORKDIR/collections (empty before), offline:
#      the dependencies in galaxy.yml must already be installed (the venv's ansible package)
#   3. the user's playbook (files/site.yml)   -> WORKDIR/playbook/site.yml
# converge runs WORKDIR/playbook/site.yml with ANSIBLE_COLLECTIONS_PATH=WORKDIR/collections
# (molecule.yml). WORKDIR is recreated on every run and kept afterwards for inspection.
# Usage: build_and_install.sh PROJECT_DIR WORKDIR
set -euo pipefail

project=$(realpath "$1")
workdir=$2
case "$workdir" in
  /*-artifact) ;;
  *) echo "WORKDIR must be an absolute path ending in -artifact, got '$workdir'" >&2; exit 2 ;;
esac
workdir=$(realpath -m "$workdir")
case "$workdir/" in
  "$project"/*) echo "WORKDIR $workdir is inside the repository $project" >&2; exit 2 ;;
esac

rm -rf "$workdir"
mkdir -p "$workdir/dist" "$workdir/collections" "$workdir/playbook"
# From the empty directory, with no ansible.cfg: nothing of the repository's configuration
# (its collections_path holds the repository itself) takes part.
cd "$workdir"
unset ANSIBLE_CONFIG ANSIBLE_ROLES_PATH
export ANSIBLE_COLLECTIONS_PATH="$workdir/collections"

ansible-galaxy collection build --output-path "$workdir/dist" "$project"
tarball=("$workdir"/dist/mlflow_aws-mlflow-*.tar.gz)
[ "${#tarball[@]}" -eq 1 ] && [ -f "${tarball[0]}" ] || { echo "expected one tarball in $workdir/dist" >&2; exit 1; }
ansible-galaxy collection install --offline -p "$workdir/collections" "${tarball[0]}"

install -m 0644 "$project/molecule/collection/files/site.yml" "$workdir/playbook/site.yml"
echo "collection: ${tarball[0]} installed in $workdir/collections; playbook $workdir/playbook/site.yml"
