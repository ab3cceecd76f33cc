# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""mlflow_auth_permission against the fake MLflow auth API (tests/unit/conftest.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.mlflow_aws.mlflow.plugins.modules import mlflow_auth_permission as module

ADMIN_PASSWORD = "admin-password-0"
PW = "alice-password-1"

GRANT = ("POST", "/api/3.0/mlflow/users/permissions/grant")
REVOKE = ("POST", "/api/3.0/mlflow/users/permissions/revoke")
CREATE_EXPERIMENT = ("POST", "/api/2.0/mlflow/experiments/create")
CREATE_MODEL = ("POST", "/api/2.0/mlflow/registered-models/create")


@pytest.fixture
def alice(mlflow_api):
    return mlflow_api.add_user("alice", PW)


def test_grants_on_an_experiment_by_id(run_module, mlflow_api, alice):
    exp_id = mlflow_api.add_experiment("churn")
    failed, result = run_module(module, user="alice", resource_type="experiment", resource="churn", permission="READ")
    assert not failed, result
    assert result == {"changed": True, "changes": ["grant READ"], "resource_id": exp_id}
    assert mlflow_api.direct_grants("alice") == {("experiment", exp_id): "READ"}
    assert mlflow_api.mutations() == [GRANT]
    assert ADMIN_PASSWORD not in json.dumps(result)


def test_second_run_changes_nothing(run_module, mlflow_api, alice):
    params = dict(user="alice", resource_type="registered_model", resource="churn-model", permission="MANAGE")
    run_module(module, **params)
    del mlflow_api.requests[:]
    failed, result = run_module(module, **params)
    assert not failed and result["changed"] is False and result["changes"] == []
    assert mlflow_api.mutations() == []


def test_a_different_level_is_revoked_then_granted(run_module, mlflow_api, alice):
    exp_id = mlflow_api.add_experiment("churn")
    mlflow_api.grant("alice", "experiment", exp_id, "READ")
    failed, result = run_module(module, user="alice", resource_type="experiment", resource="churn", permission="EDIT")
    assert not failed, result
    assert result["changes"] == ["revoke READ", "grant EDIT"]
    assert mlflow_api.direct_grants("alice") == {("experiment", exp_id): "EDIT"}
    assert mlflow_api.mutations() == [REVOKE, GRANT]


def test_a_grant_through_a_role_is_not_the_direct_grant(run_module, mlflow_api, alice):
    exp_id = mlflow_api.add_experiment("churn")
    mlflow_api.add_role("readers", permissions=[("experiment", exp_id, "READ")])
    mlflow_api.assign("alice", "readers")
    failed, result = run_module(module, user="alice", resource_type="experiment", resource="churn", permission="READ")
    assert not failed, result
    assert result["changes"] == ["grant READ"]
    assert mlflow_api.direct_grants("alice") == {("experiment", exp_id): "READ"}


def test_the_wildcard_and_types_named_by_name(run_module, mlflow_api, alice):
    for resource_type, resource in (("experiment", "*"), ("prompt", "summarize"), ("scorer", "7/judge")):
        failed, result = run_module(module, user="alice", resource_type=resource_type, resource=resource, permission="USE")
        assert not failed and result["resource_id"] == resource, result
    assert mlflow_api.direct_grants("alice") == {
        ("experiment", "*"): "USE", ("prompt", "summarize"): "USE", ("scorer", "7/judge"): "USE"}
    assert CREATE_EXPERIMENT not in mlflow_api.mutations()


def test_missing_resources_are_created(run_module, mlflow_api, alice):
    failed, result = run_module(module, user="alice", resource_type="experiment", resource="new-exp", permission="READ")
    assert not failed, result
    assert result["changes"] == ["create experiment new-exp", "grant READ"]
    assert result["resource_id"] == mlflow_api.experiments["new-exp"]
    failed, result = run_module(module, user="alice", resource_type="registered_model", resource="new-model", permission="READ")
    assert not failed, result
    assert result["changes"] == ["create registered_model new-model", "grant READ"]
    assert "new-model" in mlflow_api.models


def test_create_missing_off(run_module, mlflow_api, alice):
    failed, result = run_module(module, user="alice", resource_type="registered_model", resource="nope",
                                permission="READ", create_missing=False)
    assert failed
    assert result["msg"] == ("permission of 'alice' on registered_model 'nope': "
                             "registered model 'nope' does not exist (create_missing is off)")
    assert mlflow_api.mutations() == []


def test_revokes(run_module, mlflow_api, alice):
    mlflow_api.grant("alice", "registered_model", "churn-model", "EDIT")
    mlflow_api.models.add("churn-model")
    failed, result = run_module(module, user="alice", resource_type="registered_model", resource="churn-model", state="absent")
    assert not failed, result
    assert result == {"changed": True, "changes": ["revoke EDIT"], "resource_id": "churn-model"}
    assert mlflow_api.direct_grants("alice") == {}
    assert mlflow_api.mutations() == [REVOKE]


@pytest.mark.parametrize("resource_type, resource", [("experiment", "nope"), ("registered_model", "nope"), ("experiment", "Default")])
def test_absent_changes_nothing_when_there_is_no_grant_or_no_resource(run_module, mlflow_api, alice, resource_type, resource):
    failed, result = run_module(module, user="alice", resource_type=resource_type, resource=resource, state="absent")
    assert not failed and result["changed"] is False, result
    # Nothing is created just to revoke from it.
    assert mlflow_api.mutations() == []


def test_a_missing_user(run_module, mlflow_api):
    failed, result = run_module(module, user="ghost", resource_type="experiment", resource="*", state="absent")
    assert not failed and result["changed"] is False
    failed, result = run_module(module, user="ghost", resource_type="experiment", resource="*", permission="READ")
    assert failed
    assert result["msg"] == "user 'ghost' does not exist"
    assert mlflow_api.mutations() == []


def test_present_needs_a_permission(run_module, mlflow_api, alice):
    failed, result = run_module(module, user="alice", resource_type="experiment", resource="*")
    assert failed
    assert result["msg"] == "state is present but all of the following are missing: permission"
    assert mlflow_api.requests == []


@pytest.mark.parametrize("case", ["new grant", "new experiment", "new model", "change", "revoke"])
def test_check_mode_reports_without_changing(run_module, mlflow_api, alice, case):
    exp_id = mlflow_api.add_experiment("churn")
    mlflow_api.grant("alice", "experiment", exp_id, "READ")
    params, changes = {
        "new grant": (dict(resource_type="prompt", resource="p", permission="USE"), ["grant USE"]),
        "new experiment": (dict(resource_type="experiment", resource="x", permission="USE"),
                           ["create experiment x", "grant USE"]),
        "new model": (dict(resource_type="registered_model", resource="m", permission="USE"),
                      ["create registered_model m", "grant USE"]),
        "change": (dict(resource_type="experiment", resource="churn", permission="EDIT"), ["revoke READ", "grant EDIT"]),
        "revoke": (dict(resource_type="experiment", resource="churn", state="absent"), ["revoke READ"]),
    }[case]
    failed, result = run_module(module, check_mode=True, user="alice", **params)
    assert not failed, result
    assert result["changed"] is True and result["changes"] == changes
    assert mlflow_api.mutations() == []
    assert mlflow_api.direct_grants("alice") == {("experiment", exp_id): "READ"}
    assert set(mlflow_api.experiments) == {"Default", "churn"} and not mlflow_api.models


def test_an_api_error(run_module, mlflow_api, alice):
    mlflow_api.fail_once("POST", "/api/3.0/mlflow/users/permissions/grant", 400,
                         {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid permission 'USE' for prompt"})
    failed, result = run_module(module, user="alice", resource_type="prompt", resource="p", permission="USE")
    assert failed
    assert result["msg"] == ("permission of 'alice' on prompt 'p': POST /api/3.0/mlflow/users/permissions/grant "
                             "answered HTTP 400: Invalid permission 'USE' for prompt")
    assert ADMIN_PASSWORD not in json.dumps(result)
