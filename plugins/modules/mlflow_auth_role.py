#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mlflow_auth_role
short_description: Manage an MLflow RBAC role and its permissions through the auth REST API
description:
  - MLflow 3.17's basic-auth app has roles scoped to a workspace (C(default) when workspaces are
    off). A role holds grants (resource type, resource pattern, permission); users are assigned
    roles (see O(mlflow_aws.mlflow.mlflow_auth_user#module:roles)).
  - The role's grants are reconciled to exactly O(permissions).
  - Uses only the Python standard library.
options:
  name:
    description: Role name.
    type: str
    required: true
  workspace:
    description: Workspace of the role.
    type: str
    default: default
  description:
    description: Free text.
    type: str
    default: ""
  permissions:
    description: The role's grants.
    type: list
    elements: dict
    default: []
    suboptions:
      resource_type:
        description: C(experiment), C(registered_model), C(prompt), C(scorer) or C(workspace).
        type: str
        required: true
        choices: [experiment, registered_model, prompt, scorer, workspace]
      resource:
        description: Resource name (experiments by name), or C(*) for all; C(workspace) takes only C(*).
        type: str
        default: "*"
      permission:
        description: READ, USE, EDIT, MANAGE or DENY (C(workspace) takes USE or MANAGE).
        type: str
        required: true
        choices: [READ, USE, EDIT, MANAGE, DENY]
  create_missing:
    description: Create a missing experiment or registered model (empty) so a grant can name it.
    type: bool
    default: true
  state:
    description: Whether the role exists.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - mlflow_aws.mlflow.mlflow_auth_api
author: mlflow-aws team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Data scientists edit every experiment
  mlflow_aws.mlflow.mlflow_auth_role:
    admin_username: admin
    admin_password: "{{ vault_mlflow_admin_password }}"
    name: data-scientists
    permissions:
      - {resource_type: experiment, resource: "*", permission: EDIT}
"""

RETURN = r"""
role:
  description: The role (id, name, workspace) after the run; null when absent.
  returned: always
  type: dict
changes:
  description: What was (or, in check mode, would be) changed.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.mlflow_aws.mlflow.plugins.module_utils.mlflow_auth_api import (
    PERMISSIONS,
    RESOURCE_TYPES,
    run_module,
)


def run(module, client):
    p = module.params
    changes = []
    role = next((r for r in client.list_roles(p["workspace"]) if r["name"] == p["name"]), None)

    if p["state"] == "absent":
        if role is not None:
            changes.append("delete role")
            if not module.check_mode:
                client.delete_role(role["id"])
        return dict(changed=bool(changes), changes=changes, role=None)

    wanted = {}
    for grant in p["permissions"]:
        pattern, created = client.resolve_pattern(grant["resource_type"], grant["resource"], p["create_missing"], module.check_mode)
        if created:
            changes.append("create %s %s" % (grant["resource_type"], grant["resource"]))
        if pattern is None:
            pattern = "<new %s>" % grant["resource"]
        wanted[(grant["resource_type"], pattern)] = grant["permission"]

    if role is None:
        changes.append("create role")
        if module.check_mode:
            changes.extend("add %s %s %s" % (k[0], k[1], v) for k, v in sorted(wanted.items()))
            return dict(changed=True, changes=changes, role=dict(name=p["name"], workspace=p["workspace"]))
        role = client.create_role(p["workspace"], p["name"], p["description"] or None)
    elif (role.get("description") or "") != p["description"]:
        changes.append("update description")
        if not module.check_mode:
            client.update_role(role["id"], p["description"])

    current = dict(((rp["resource_type"], rp["resource_pattern"]), rp) for rp in role.get("permissions", []))
    for key, permission in sorted(wanted.items()):
        have = current.get(key)
        if have is None:
            changes.append("add %s %s %s" % (key[0], key[1], permission))
            if not module.check_mode:
                client.add_role_permission(role["id"], key[0], key[1], permission)
        elif have["permission"] != permission:
            changes.append("set %s %s %s" % (key[0], key[1], permission))
            if not module.check_mode:
                client.update_role_permission(have["id"], permission)
    for key, have in sorted(current.items()):
        if key not in wanted:
            changes.append("remove %s %s %s" % (key[0], key[1], have["permission"]))
            if not module.check_mode:
                client.remove_role_permission(have["id"])
    return dict(changed=bool(changes), changes=changes,
                role=dict(id=role["id"], name=role["name"], workspace=role["workspace"]))


def main():
    run_module(dict(
        name=dict(type="str", required=True),
        workspace=dict(type="str", default="default"),
        description=dict(type="str", default=""),
        permissions=dict(type="list", elements="dict", default=[], options=dict(
            resource_type=dict(type="str", required=True, choices=list(RESOURCE_TYPES)),
            resource=dict(type="str", default="*"),
            permission=dict(type="str", required=True, choices=list(PERMISSIONS)),
        )),
        create_missing=dict(type="bool", default=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    ), run, lambda p: "role '%s'" % p["name"])


if __name__ == "__main__":
    main()
