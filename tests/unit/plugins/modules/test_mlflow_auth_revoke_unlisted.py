# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""mlflow_auth_revoke_unlisted against the fake MLflow auth API (tests/unit/conftest.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.mlflow_aws.mlflow.plugins.modules import mlflow_auth_revoke_unlisted as module

ADMIN_PASSWORD = "admin-password-0"

REVOKE = ("POST", "/api/3.0/mlflow/users/permissions/revoke")
UNASSIGN = ("DELETE", "/api/3.0/mlflow/roles/unassign")


@pytest.fixture
def world(mlflow_api):
    """alice (declared: EDIT on churn, MANAGE on churn-model), bob (declared: READ on churn),
    carol (declared: role readers), mallory (not declared), ops (an admin), each with grants."""
    api = mlflow_api
    churn = api.add_experiment("churn")
    other = api.add_experiment("other")
    api.models.update(["churn-model", "other-model"])
    readers = api.add_role("readers", permissions=[("registered_model", "*", "READ")])
    api.add_role("writers", permissions=[("experiment", "*", "EDIT")])
    for name in ("alice", "bob", "carol", "mallory", "ops"):
        api.add_user(name, name + "-password-1", is_admin=(name == "ops"))
    api.grant("alice", "experiment", churn, "EDIT")
    api.grant("alice", "registered_model", "churn-model", "MANAGE")
    api.grant("alice", "experiment", other, "MANAGE")  # e.g. MLflow's grant to the creator
    api.grant("bob", "experiment", churn, "READ")
    api.grant("bob", "registered_model", "other-model", "EDIT")
    api.grant("bob", "prompt", "some-prompt", "MANAGE")  # another resource type: left alone
    api.assign("carol", "readers")
    api.assign("bob", "writers")
    api.grant("mallory", "experiment", "*", "READ")
    api.assign("mallory", "readers")
    api.grant("ops", "experiment", other, "MANAGE")
    api.grant("admin", "experiment", other, "MANAGE")
    del api.requests[:]
    return dict(churn=churn, other=other, readers=readers)


DECLARED = dict(
    experiment_permissions=[
        {"user": "alice", "experiment": "churn", "permission": "EDIT"},
        {"user": "bob", "experiment": "churn", "permission": "READ"},
        {"user": "bob", "experiment": "not-created-yet", "permission": "READ"},
    ],
    registered_model_permissions=[{"user": "alice", "model": "churn-model", "permission": "MANAGE"}],
    users=[{"name": "alice"}, {"name": "bob"}, {"name": "carol", "roles": ["readers"]}, {"name": "ops", "admin": True}],
)


def test_revokes_what_is_not_declared_and_nothing_else(run_module, mlflow_api, world):
    failed, result = run_module(module, **DECLARED)
    assert not failed, result
    assert result["changed"] is True
    assert result["revoked"] == [
        {"user": "alice", "resource_type": "experiment", "resource": "other", "resource_id": world["other"], "permission": "MANAGE"},
        {"user": "bob", "resource_type": "registered_model", "resource": "other-model", "resource_id": "other-model",
         "permission": "EDIT"},
        {"user": "mallory", "resource_type": "experiment", "resource": "*", "resource_id": "*", "permission": "READ"},
    ]
    assert result["unassigned"] == [{"user": "bob", "role": "writers"}, {"user": "mallory", "role": "readers"}]
    assert "revoke alice MANAGE experiment 'other' (id %s)" % world["other"] in result["changes"]
    assert mlflow_api.direct_grants("alice") == {("experiment", world["churn"]): "EDIT", ("registered_model", "churn-model"): "MANAGE"}
    assert mlflow_api.direct_grants("bob") == {("experiment", world["churn"]): "READ", ("prompt", "some-prompt"): "MANAGE"}
    assert mlflow_api.direct_grants("mallory") == {}
    # Admins, the admin the module acts as and declared roles are untouched; no user is deleted.
    assert mlflow_api.direct_grants("ops") == {("experiment", world["other"]): "MANAGE"}
    assert mlflow_api.direct_grants("admin") == {("experiment", world["other"]): "MANAGE"}
    assert mlflow_api.user_role_names("carol") == ["readers"]
    assert set(mlflow_api.users) == {"admin", "alice", "bob", "carol", "mallory", "ops"}
    assert sorted(mlflow_api.mutations()) == sorted([REVOKE] * 3 + [UNASSIGN] * 2)
    assert ADMIN_PASSWORD not in json.dumps(result)
    assert "password" not in json.dumps(result)


def test_second_run_changes_nothing(run_module, mlflow_api, world):
    run_module(module, **DECLARED)
    del mlflow_api.requests[:]
    failed, result = run_module(module, **DECLARED)
    assert not failed and result["changed"] is False
    assert result["revoked"] == [] and result["unassigned"] == [] and result["changes"] == []
    assert mlflow_api.mutations() == []


def test_check_mode_reports_and_changes_nothing(run_module, mlflow_api, world):
    failed, result = run_module(module, check_mode=True, **DECLARED)
    assert not failed and result["changed"] is True
    assert len(result["revoked"]) == 3 and len(result["unassigned"]) == 2
    assert mlflow_api.mutations() == []
    assert ("experiment", world["other"]) in mlflow_api.direct_grants("alice")
    assert mlflow_api.user_role_names("mallory") == ["__user_%s__" % mlflow_api.users["mallory"]["id"], "readers"]


def test_exempt_and_absent_users_are_left_alone(run_module, mlflow_api, world):
    declared = dict(DECLARED, exempt_users=["mallory"],
                    users=[{"name": "alice"}, {"name": "bob", "state": "absent"}, {"name": "carol", "roles": ["readers"]}])
    failed, result = run_module(module, **declared)
    assert not failed, result
    assert [r["user"] for r in result["revoked"]] == ["alice"]
    assert result["unassigned"] == []
    assert mlflow_api.direct_grants("mallory") == {("experiment", "*"): "READ"}


def test_a_declared_wildcard_and_an_absent_grant(run_module, mlflow_api, world):
    failed, result = run_module(
        module, users=[{"name": "mallory", "roles": ["readers"]}], exempt_users=["alice", "bob", "carol"],
        experiment_permissions=[{"user": "mallory", "experiment": "*", "permission": "READ"},
                                {"user": "mallory", "experiment": "churn", "state": "absent"}])
    assert not failed, result
    assert result["changed"] is False, result


def test_a_grant_on_a_deleted_experiment_is_shown_by_id(run_module, mlflow_api, world):
    mlflow_api.grant("mallory", "experiment", "999", "EDIT")
    failed, result = run_module(module, check_mode=True, **DECLARED)
    assert not failed, result
    assert {"user": "mallory", "resource_type": "experiment", "resource": "999", "resource_id": "999",
            "permission": "EDIT"} in result["revoked"]
    assert "revoke mallory EDIT experiment '999'" in result["changes"]


def test_an_api_error_fails_naming_the_step(run_module, mlflow_api, world):
    mlflow_api.fail_once("POST", "/api/3.0/mlflow/users/permissions/revoke", 500, {"message": "boom"})
    failed, result = run_module(module, **DECLARED)
    assert failed and result["msg"].startswith("revoking what is not declared:"), result
    assert "boom" in result["msg"] and ADMIN_PASSWORD not in result["msg"]
