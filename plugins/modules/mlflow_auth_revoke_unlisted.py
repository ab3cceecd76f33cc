#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mlflow_auth_revoke_unlisted
short_description: Revoke the MLflow grants and role assignments a declaration does not list
description:
  - Makes the declared experiment and registered model grants and role assignments exclusive.
    Every user of MLflow's basic-auth app is read (C(GET /api/2.0/mlflow/users/list), one call
    that returns each user's roles with their grants), then does the following for every user that is not an admin.
  - Each direct grant (the user's C(__user_<id>__) role, which MLflow's C(grant) API and MLflow itself,
    when a user creates an experiment or registered model, write to) on an experiment or a registered
    model that O(experiment_permissions) / O(registered_model_permissions) do not declare present for
    that user is revoked, whatever its permission level;
  - Each assignment to a role of O(workspace) that the user's entry in O(users) does not list in
    its C(roles) is removed (a user not in O(users) holds no role).
  - Never touched, whatever the declaration says, are MLflow admins, O(admin_username) (the admin
    the module acts as), users declared with C(admin=true) in O(users), the users in O(exempt_users),
    users declared C(state=absent) (the user module deletes them), grants on other resource types
    (prompts, scorers, gateway objects, workspaces), grants and roles of other workspaces, and the
    users themselves (no account is deleted, no password read or changed).
  - The grant a user declared in O(experiment_permissions) holds at another level is not this module's
    business (M(mlflow_aws.mlflow.mlflow_auth_permission) reconciles the level); run that first.
  - Check mode reports what would be revoked and changes nothing.
  - Uses only the Python standard library.
options:
  experiment_permissions:
    description: The declared direct grants on experiments; those with C(state=present) are kept.
    type: list
    elements: dict
    default: []
    suboptions:
      user:
        description: User name.
        type: str
        required: true
      experiment:
        description: Experiment name, or C(*) for every experiment.
        type: str
        required: true
      permission:
        description: Ignored (the level is the permission module's business).
        type: str
      state:
        description: Only C(present) grants are kept.
        type: str
        choices: [present, absent]
        default: present
  registered_model_permissions:
    description: The declared direct grants on registered models; those with C(state=present) are kept.
    type: list
    elements: dict
    default: []
    suboptions:
      user:
        description: User name.
        type: str
        required: true
      model:
        description: Registered model name, or C(*) for every model.
        type: str
        required: true
      permission:
        description: Ignored (the level is the permission module's business).
        type: str
      state:
        description: Only C(present) grants are kept.
        type: str
        choices: [present, absent]
        default: present
  users:
    description:
      - The declared users, without their passwords. A user's role assignments in O(workspace) are
        kept when its C(roles) lists them; a user that is not listed, or is listed without C(roles),
        keeps none.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: User name.
        type: str
        required: true
      roles:
        description: Roles of O(workspace) the user holds.
        type: list
        elements: str
        default: []
      admin:
        description: A declared admin is never touched (even before the user module promoted it).
        type: bool
        default: false
      state:
        description: Users declared absent are left to the user module, which deletes them.
        type: str
        choices: [present, absent]
        default: present
  exempt_users:
    description: Users whose grants and role assignments are never revoked (e.g. a service account that creates experiments).
    type: list
    elements: str
    default: []
  workspace:
    description: Workspace whose roles and grants are reconciled (C(default) unless MLflow workspaces are on).
    type: str
    default: default
extends_documentation_fragment:
  - mlflow_aws.mlflow.mlflow_auth_api
author: mlflow-aws team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Only the declared grants remain
  mlflow_aws.mlflow.mlflow_auth_revoke_unlisted:
    admin_username: admin
    admin_password: "{{ vault_mlflow_admin_password }}"
    experiment_permissions:
      - {user: alice, experiment: churn, permission: EDIT}
    registered_model_permissions:
      - {user: alice, model: churn-model, permission: MANAGE}
    users:
      - {name: alice}
      - {name: carol, roles: [model-readers]}
"""

RETURN = r"""
revoked:
  description: The direct grants revoked (in check mode, that would be revoked).
  returned: always
  type: list
  elements: dict
  contains:
    user:
      description: User name.
      type: str
    resource_type:
      description: C(experiment) or C(registered_model).
      type: str
    resource:
      description: Experiment name (its id when it cannot be read) or registered model name, or C(*).
      type: str
    resource_id:
      description: The grant's resource pattern (experiment id, model name, or C(*)).
      type: str
    permission:
      description: The level the grant gave.
      type: str
unassigned:
  description: The role assignments removed (in check mode, that would be removed).
  returned: always
  type: list
  elements: dict
  contains:
    user:
      description: User name.
      type: str
    role:
      description: Role name.
      type: str
changes:
  description: The same, one line each.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.mlflow_aws.mlflow.plugins.module_utils.mlflow_auth_api import (
    SYNTHETIC_ROLE_RE,
    run_module,
)

GRANT_TYPES = (("experiment", "experiment_permissions", "experiment"),
               ("registered_model", "registered_model_permissions", "model"))


def declared_grants(module, client):
    """{(user, resource_type, pattern)} declared present. Experiments are named by name and
    granted by id; one that does not exist cannot hold a grant, so it adds nothing."""
    keep = set()
    experiment_ids = {}
    for resource_type, option, key in GRANT_TYPES:
        for grant in module.params[option]:
            if grant["state"] != "present":
                continue
            pattern = grant[key]
            if resource_type == "experiment" and pattern != "*":
                if pattern not in experiment_ids:
                    experiment_ids[pattern] = client.experiment_id(pattern)
                pattern = experiment_ids[pattern]
                if pattern is None:
                    continue
            keep.add((grant["user"], resource_type, pattern))
    return keep


def run(module, client):
    p = module.params
    keep = declared_grants(module, client)
    declared = dict((u["name"], u) for u in p["users"])
    exempt = set(p["exempt_users"]) | set([p["admin_username"]])
    exempt |= set(name for name, u in declared.items() if u["admin"] or u["state"] == "absent")
    revoked, unassigned, changes = [], [], []
    experiment_names = {}

    for user in sorted(client.list_users(), key=lambda u: u["username"]):
        name = user["username"]
        if user.get("is_admin") or name in exempt:
            continue
        wanted_roles = set(declared[name]["roles"]) if name in declared else set()
        synthetic = "__user_%s__" % user["id"]
        for role in sorted(user.get("roles") or [], key=lambda r: r["name"]):
            if role.get("workspace", p["workspace"]) != p["workspace"]:
                continue
            if role["name"] == synthetic:
                for rp in sorted(role.get("permissions") or [], key=lambda g: (g["resource_type"], g["resource_pattern"])):
                    resource_type, pattern = rp["resource_type"], rp["resource_pattern"]
                    if resource_type not in ("experiment", "registered_model") or (name, resource_type, pattern) in keep:
                        continue
                    shown = pattern
                    if resource_type == "experiment" and pattern != "*":
                        if pattern not in experiment_names:
                            experiment_names[pattern] = client.experiment_name(pattern)
                        shown = experiment_names[pattern] or pattern
                    revoked.append(dict(user=name, resource_type=resource_type, resource=shown,
                                        resource_id=pattern, permission=rp["permission"]))
                    changes.append("revoke %s %s %s '%s'%s" % (
                        name, rp["permission"], resource_type, shown,
                        " (id %s)" % pattern if shown != pattern else ""))
                    if not module.check_mode:
                        client.revoke(name, resource_type, pattern)
            elif not SYNTHETIC_ROLE_RE.match(role["name"]) and role["name"] not in wanted_roles:
                unassigned.append(dict(user=name, role=role["name"]))
                changes.append("unassign %s from role %s" % (name, role["name"]))
                if not module.check_mode:
                    client.unassign_role(name, role["id"])
    return dict(changed=bool(changes), changes=changes, revoked=revoked, unassigned=unassigned)


def main():
    grant_options = dict(
        user=dict(type="str", required=True),
        permission=dict(type="str"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    run_module(dict(
        experiment_permissions=dict(type="list", elements="dict", default=[],
                                    options=dict(grant_options, experiment=dict(type="str", required=True))),
        registered_model_permissions=dict(type="list", elements="dict", default=[],
                                          options=dict(grant_options, model=dict(type="str", required=True))),
        users=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True),
            roles=dict(type="list", elements="str", default=[]),
            admin=dict(type="bool", default=False),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        )),
        exempt_users=dict(type="list", elements="str", default=[]),
        workspace=dict(type="str", default="default"),
    ), run, lambda p: "revoking what is not declared")


if __name__ == "__main__":
    main()
