#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mlflow_auth_permission
short_description: Grant or revoke one user's permission on one MLflow resource
description:
  - Reconciles the user's direct grant (MLflow's per-user C(__user_<id>__) role) on an
    experiment, registered model, prompt or scorer through MLflow's auth REST API.
  - Experiments are named by name and resolved to their id; registered models may be
    created when missing.
  - Uses only the Python standard library.
options:
  user:
    description: User name.
    type: str
    required: true
  resource_type:
    description: Kind of resource.
    type: str
    choices: [experiment, registered_model, prompt, scorer]
    required: true
  resource:
    description: Experiment name, registered model / prompt name, scorer id, or C(*) for every resource of the type.
    type: str
    required: true
  permission:
    description: Permission level; required with state=present.
    type: str
    choices: [READ, USE, EDIT, MANAGE, DENY]
  create_missing:
    description: Create a missing experiment or registered model (empty) so the grant can name it.
    type: bool
    default: true
  state:
    description: Whether the grant exists.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - mlflow_aws.mlflow.mlflow_auth_api
author: mlflow-aws team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Alice may read the churn experiment
  mlflow_aws.mlflow.mlflow_auth_permission:
    admin_username: admin
    admin_password: "{{ vault_mlflow_admin_password }}"
    user: alice
    resource_type: experiment
    resource: churn
    permission: READ
"""

RETURN = r"""
changes:
  description: What was (or, in check mode, would be) changed.
  returned: always
  type: list
  elements: str
resource_id:
  description: The grant's resource pattern (experiment id, model name, or C(*)).
  returned: always
  type: str
"""

from ansible_collections.mlflow_aws.mlflow.plugins.module_utils.mlflow_auth_api import (
    DEFAULT_WORKSPACE,
    PERMISSIONS,
    RESOURCE_TYPES,
    MlflowAuthError,
    run_module,
)


def run(module, client):
    p = module.params
    changes = []
    user = client.get_user(p["user"])
    if user is None:
        if p["state"] == "absent":
            return dict(changed=False, changes=changes, resource_id=None)
        module.fail_json(msg="user '%s' does not exist" % p["user"])

    if p["state"] == "absent":
        # Do not create anything just to revoke from it.
        try:
            pattern = client.resolve_pattern(p["resource_type"], p["resource"], False, True)[0]
        except MlflowAuthError:
            return dict(changed=False, changes=changes, resource_id=None)
    else:
        pattern, created = client.resolve_pattern(p["resource_type"], p["resource"], p["create_missing"], module.check_mode)
        if created:
            changes.append("create %s %s" % (p["resource_type"], p["resource"]))
        if pattern is None:  # would be created (check mode): the grant is new as well
            changes.append("grant %s" % p["permission"])
            return dict(changed=True, changes=changes, resource_id=None)

    synthetic = "__user_%s__" % user["id"]
    current = None
    for row in client.list_user_permissions(p["user"]):
        if (row["role_name"] == synthetic and row["workspace"] == DEFAULT_WORKSPACE
                and row["resource_type"] == p["resource_type"] and row["resource_pattern"] == pattern):
            current = row["permission"]

    if p["state"] == "absent":
        if current is not None:
            changes.append("revoke %s" % current)
            if not module.check_mode:
                client.revoke(p["user"], p["resource_type"], pattern)
    elif current != p["permission"]:
        if current is not None:
            changes.append("revoke %s" % current)
            if not module.check_mode:
                client.revoke(p["user"], p["resource_type"], pattern)
        changes.append("grant %s" % p["permission"])
        if not module.check_mode:
            client.grant(p["user"], p["resource_type"], pattern, p["permission"])
    return dict(changed=bool(changes), changes=changes, resource_id=pattern)


def main():
    run_module(dict(
        user=dict(type="str", required=True),
        resource_type=dict(type="str", required=True, choices=[t for t in RESOURCE_TYPES if t != "workspace"]),
        resource=dict(type="str", required=True),
        permission=dict(type="str", choices=list(PERMISSIONS)),
        create_missing=dict(type="bool", default=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    ), run, lambda p: "permission of '%s' on %s '%s'" % (p["user"], p["resource_type"], p["resource"]),
        required_if=[("state", "present", ["permission"])])


if __name__ == "__main__":
    main()
