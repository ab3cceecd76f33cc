# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""mlflow_auth_role against the fake MLflow auth API (tests/unit/conftest.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.mlflow_aws.mlflow.plugins.modules import mlflow_auth_role as module

ADMIN_PASSWORD = "admin-password-0"

CREATE_ROLE = ("POST", "/api/3.0/mlflow/roles/create")
UPDATE_ROLE = ("PATCH", "/api/3.0/mlflow/roles/update")
DELETE_ROLE = ("DELETE", "/api/3.0/mlflow/roles/delete")
ADD = ("POST", "/api/3.0/mlflow/roles/permissions/add")
SET = ("PATCH", "/api/3.0/mlflow/roles/permissions/update")
REMOVE = ("DELETE", "/api/3.0/mlflow/roles/permissions/remove")
CREATE_EXPERIMENT = ("POST", "/api/2.0/mlflow/experiments/create")
CREATE_MODEL = ("POST", "/api/2.0/mlflow/registered-models/create")


def grants(mlflow_api, name, workspace="default"):
    role = mlflow_api.role_named(name, workspace)
    return sorted((p["resource_type"], p["resource_pattern"], p["permission"]) for p in role["permissions"])


def test_creates_a_role_with_its_grants(run_module, mlflow_api):
    exp_id = mlflow_api.add_experiment("churn")
    failed, result = run_module(module, name="scientists", description="Data scientists", permissions=[
        dict(resource_type="experiment", resource="churn", permission="EDIT"),
        dict(resource_type="registered_model", permission="READ"),
        dict(resource_type="workspace", permission="USE"),
    ])
    assert not failed, result
    role = mlflow_api.role_named("scientists")
    assert role["description"] == "Data scientists"
    # Experiments are granted by id, everything else by name or "*".
    assert grants(mlflow_api, "scientists") == [
        ("experiment", exp_id, "EDIT"), ("registered_model", "*", "READ"), ("workspace", "*", "USE")]
    assert result["changes"] == ["create role", "add experiment %s EDIT" % exp_id,
                                 "add registered_model * READ", "add workspace * USE"]
    assert result["role"] == {"id": role["id"], "name": "scientists", "workspace": "default"}
    assert mlflow_api.mutations() == [CREATE_ROLE, ADD, ADD, ADD]
    assert ADMIN_PASSWORD not in json.dumps(result)


def test_second_run_changes_nothing(run_module, mlflow_api):
    params = dict(name="scientists", description="x", permissions=[
        dict(resource_type="experiment", resource="churn", permission="EDIT"),
        dict(resource_type="registered_model", resource="churn-model", permission="MANAGE")])
    run_module(module, **params)
    del mlflow_api.requests[:]
    failed, result = run_module(module, **params)
    assert not failed and result["changed"] is False and result["changes"] == []
    assert mlflow_api.mutations() == []


def test_grants_are_reconciled_to_exactly_the_list(run_module, mlflow_api):
    exp_id = mlflow_api.add_experiment("churn")
    mlflow_api.add_role("scientists", description="old", permissions=[
        ("experiment", exp_id, "READ"), ("prompt", "*", "READ"), ("registered_model", "*", "READ")])
    failed, result = run_module(module, name="scientists", description="new", permissions=[
        dict(resource_type="experiment", resource="churn", permission="EDIT"),
        dict(resource_type="registered_model", permission="READ"),
        dict(resource_type="scorer", resource="7/judge", permission="USE"),
    ])
    assert not failed, result
    assert result["changes"] == ["update description", "set experiment %s EDIT" % exp_id,
                                 "add scorer 7/judge USE", "remove prompt * READ"]
    assert grants(mlflow_api, "scientists") == [
        ("experiment", exp_id, "EDIT"), ("registered_model", "*", "READ"), ("scorer", "7/judge", "USE")]
    assert mlflow_api.role_named("scientists")["description"] == "new"
    assert sorted(mlflow_api.mutations()) == sorted([UPDATE_ROLE, SET, ADD, REMOVE])


def test_an_empty_list_removes_every_grant(run_module, mlflow_api):
    mlflow_api.add_role("scientists", permissions=[("prompt", "*", "READ")])
    failed, result = run_module(module, name="scientists")
    assert not failed, result
    assert result["changes"] == ["remove prompt * READ"]
    assert grants(mlflow_api, "scientists") == []


def test_a_missing_experiment_or_model_is_created(run_module, mlflow_api):
    failed, result = run_module(module, name="scientists", permissions=[
        dict(resource_type="experiment", resource="new-exp", permission="READ"),
        dict(resource_type="registered_model", resource="new-model", permission="READ")])
    assert not failed, result
    exp_id = mlflow_api.experiments["new-exp"]
    assert "new-model" in mlflow_api.models
    assert result["changes"] == ["create experiment new-exp", "create registered_model new-model", "create role",
                                 "add experiment %s READ" % exp_id, "add registered_model new-model READ"]


def test_create_missing_off_fails_on_a_missing_experiment(run_module, mlflow_api):
    failed, result = run_module(module, name="scientists", create_missing=False, permissions=[
        dict(resource_type="experiment", resource="nope", permission="READ")])
    assert failed
    assert result["msg"] == "role 'scientists': experiment 'nope' does not exist (create_missing is off)"
    assert mlflow_api.mutations() == []


def test_check_mode_reports_without_changing(run_module, mlflow_api):
    failed, result = run_module(module, check_mode=True, name="scientists", permissions=[
        dict(resource_type="experiment", resource="new-exp", permission="READ"),
        dict(resource_type="registered_model", resource="new-model", permission="EDIT")])
    assert not failed, result
    assert result["changed"] is True
    assert result["changes"] == ["create experiment new-exp", "create registered_model new-model", "create role",
                                 "add experiment <new new-exp> READ", "add registered_model new-model EDIT"]
    assert mlflow_api.mutations() == []
    assert mlflow_api.role_named("scientists") is None
    assert "new-exp" not in mlflow_api.experiments and not mlflow_api.models


def test_check_mode_on_an_existing_role(run_module, mlflow_api):
    mlflow_api.add_role("scientists", description="old", permissions=[("prompt", "*", "READ"), ("scorer", "*", "READ")])
    failed, result = run_module(module, check_mode=True, name="scientists", permissions=[
        dict(resource_type="prompt", permission="EDIT"), dict(resource_type="workspace", permission="USE")])
    assert not failed, result
    assert result["changes"] == ["update description", "set prompt * EDIT", "add workspace * USE", "remove scorer * READ"]
    assert mlflow_api.mutations() == []
    assert grants(mlflow_api, "scientists") == [("prompt", "*", "READ"), ("scorer", "*", "READ")]


def test_deletes_a_role(run_module, mlflow_api):
    mlflow_api.add_role("scientists")
    failed, result = run_module(module, name="scientists", state="absent")
    assert not failed, result
    assert result == {"changed": True, "changes": ["delete role"], "role": None}
    assert mlflow_api.role_named("scientists") is None
    assert mlflow_api.mutations() == [DELETE_ROLE]


def test_deleting_in_check_mode_or_a_missing_role(run_module, mlflow_api):
    mlflow_api.add_role("scientists")
    failed, result = run_module(module, check_mode=True, name="scientists", state="absent")
    assert not failed and result["changes"] == ["delete role"]
    failed, result = run_module(module, name="nobody", state="absent")
    assert not failed and result["changed"] is False
    assert mlflow_api.mutations() == []
    assert mlflow_api.role_named("scientists") is not None


def test_a_role_of_the_same_name_in_another_workspace_is_another_role(run_module, mlflow_api):
    mlflow_api.add_role("scientists", workspace="team-b", permissions=[("prompt", "*", "READ")])
    failed, result = run_module(module, name="scientists", workspace="default", state="absent")
    assert not failed and result["changed"] is False
    failed, result = run_module(module, name="scientists", workspace="team-b",
                                permissions=[dict(resource_type="prompt", permission="READ")])
    assert not failed and result["changed"] is False


def test_argument_spec_rejects_an_unknown_resource_type(run_module, mlflow_api):
    failed, result = run_module(module, name="scientists", permissions=[dict(resource_type="run", permission="READ")])
    assert failed
    assert "resource_type" in result["msg"] and "run" in result["msg"]
    assert mlflow_api.requests == []
