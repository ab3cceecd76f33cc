#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mlflow_auth_user
short_description: Manage a user of MLflow's basic-auth app through its REST API
description:
  - Creates, updates (password, admin flag, role assignments) or deletes one MLflow user.
  - The password is changed only when it does not already authenticate, so a second run
    with the same password reports no change.
  - Uses only the Python standard library.
options:
  name:
    description: User name.
    type: str
    required: true
  password:
    description: Password (12 characters or more). Required when the user is created.
    type: str
  admin:
    description: Whether the user is an MLflow admin.
    type: bool
    default: false
  roles:
    description:
      - Names of roles (in O(workspace)) the user holds. The user's role assignments in that
        workspace are reconciled to exactly this list. Omit to leave them alone.
    type: list
    elements: str
  workspace:
    description: Workspace of the roles in O(roles).
    type: str
    default: default
  update_password:
    description: C(always) resets the password when it does not match; C(on_create) sets it only on creation.
    type: str
    choices: [always, on_create]
    default: always
  state:
    description: Whether the user exists.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - mlflow_aws.mlflow.mlflow_auth_api
author: mlflow-aws team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: A reader
  mlflow_aws.mlflow.mlflow_auth_user:
    admin_username: admin
    admin_password: "{{ vault_mlflow_admin_password }}"
    name: alice
    password: "{{ vault_alice_password }}"
"""

RETURN = r"""
user:
  description: The user after the run (absent users are returned as null).
  returned: always
  type: dict
changes:
  description: What was (or, in check mode, would be) changed.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.mlflow_aws.mlflow.plugins.module_utils.mlflow_auth_api import (
    SYNTHETIC_ROLE_RE,
    run_module,
)


def reconcile_roles(module, client, name, changes):
    p = module.params
    wanted = list(dict.fromkeys(p["roles"]))
    roles_by_name = dict((r["name"], r) for r in client.list_roles(p["workspace"]))
    missing = [r for r in wanted if r not in roles_by_name]
    if missing:
        module.fail_json(msg="roles %s do not exist in workspace '%s'" % (missing, p["workspace"]))
    held = dict(
        (r["name"], r) for r in client.list_user_roles(name)
        if r.get("workspace") == p["workspace"] and not SYNTHETIC_ROLE_RE.match(r["name"])
    )
    for role in wanted:
        if role not in held:
            changes.append("assign role %s" % role)
            if not module.check_mode:
                client.assign_role(name, roles_by_name[role]["id"])
    for role, entry in sorted(held.items()):
        if role not in wanted:
            changes.append("unassign role %s" % role)
            if not module.check_mode:
                client.unassign_role(name, entry["id"])


def run(module, client):
    p = module.params
    if p["password"] is not None and len(p["password"]) < 12:
        module.fail_json(msg="password of user '%s' must be at least 12 characters (MLflow's minimum)" % p["name"])
    name = p["name"]
    changes = []
    user = client.get_user(name)

    if p["state"] == "absent":
        if user is not None:
            if name == p["admin_username"]:
                module.fail_json(msg="refusing to delete '%s', the admin this module acts as" % name)
            changes.append("delete user")
            if not module.check_mode:
                client.delete_user(name)
        return dict(changed=bool(changes), changes=changes, user=None)

    if user is None:
        if not p["password"]:
            module.fail_json(msg="user '%s' does not exist: a password is needed to create it" % name)
        changes.append("create user")
        if module.check_mode:
            return dict(changed=True, changes=changes, user=dict(username=name, is_admin=p["admin"]))
        user = client.create_user(name, p["password"])
    elif p["password"] and p["update_password"] == "always":
        if not client.check_credentials(name, p["password"]):
            changes.append("update password")
            if not module.check_mode:
                # MLflow asks for the current password when a user changes their own.
                current = p["admin_password"] if name == p["admin_username"] else None
                client.update_password(name, p["password"], current_password=current)

    if bool(user["is_admin"]) != p["admin"]:
        if name == p["admin_username"] and not p["admin"]:
            module.fail_json(msg="refusing to take admin rights from '%s', the admin this module acts as" % name)
        changes.append("set admin=%s" % p["admin"])
        if not module.check_mode:
            client.update_admin(name, p["admin"])
        user = dict(user, is_admin=p["admin"])

    if p["roles"] is not None:
        reconcile_roles(module, client, name, changes)

    return dict(changed=bool(changes), changes=changes,
                user=dict(username=user["username"], is_admin=user["is_admin"], id=user.get("id")))


def main():
    run_module(dict(
        name=dict(type="str", required=True),
        password=dict(type="str", no_log=True),
        admin=dict(type="bool", default=False),
        roles=dict(type="list", elements="str"),
        workspace=dict(type="str", default="default"),
        update_password=dict(type="str", choices=["always", "on_create"], default="always", no_log=False),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    ), run, lambda p: "user '%s'" % p["name"])


if __name__ == "__main__":
    main()
