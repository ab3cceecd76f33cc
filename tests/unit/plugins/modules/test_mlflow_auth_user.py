# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""mlflow_auth_user against the fake MLflow auth API (tests/unit/conftest.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.mlflow_aws.mlflow.plugins.modules import mlflow_auth_user as module

ADMIN_PASSWORD = "admin-password-0"
PW = "alice-password-1"
NEW_PW = "alice-password-2"

CREATE = ("POST", "/api/2.0/mlflow/users/create")
UPDATE_PASSWORD = ("PATCH", "/api/2.0/mlflow/users/update-password")
UPDATE_ADMIN = ("PATCH", "/api/2.0/mlflow/users/update-admin")
DELETE = ("DELETE", "/api/2.0/mlflow/users/delete")
ASSIGN = ("POST", "/api/3.0/mlflow/roles/assign")
UNASSIGN = ("DELETE", "/api/3.0/mlflow/roles/unassign")


def test_creates_a_missing_user(run_module, mlflow_api):
    failed, result = run_module(module, name="alice", password=PW)
    assert not failed, result
    assert result["changed"] is True
    assert result["changes"] == ["create user"]
    assert result["user"] == {"username": "alice", "is_admin": False, "id": mlflow_api.users["alice"]["id"]}
    assert mlflow_api.users["alice"]["password"] == PW
    assert mlflow_api.mutations() == [CREATE]


def test_creates_an_admin(run_module, mlflow_api):
    failed, result = run_module(module, name="ops", password=PW, admin=True)
    assert not failed, result
    assert result["changes"] == ["create user", "set admin=True"]
    assert mlflow_api.users["ops"]["is_admin"] is True
    assert result["user"]["is_admin"] is True


def test_second_run_changes_nothing(run_module, mlflow_api):
    run_module(module, name="alice", password=PW, roles=[])
    del mlflow_api.requests[:]
    failed, result = run_module(module, name="alice", password=PW, roles=[])
    assert not failed, result
    assert result["changed"] is False and result["changes"] == []
    assert mlflow_api.mutations() == []


def test_a_password_that_authenticates_is_not_reset(run_module, mlflow_api):
    mlflow_api.add_user("alice", PW)
    failed, result = run_module(module, name="alice", password=PW)
    assert not failed and result["changed"] is False
    # It was checked by logging in as alice, not by resetting it.
    logins = [r for r in mlflow_api.requests if r["path"] == "/api/2.0/mlflow/users/current"]
    assert [r["user"] for r in logins] == ["alice"]


def test_a_password_that_does_not_authenticate_is_reset(run_module, mlflow_api):
    mlflow_api.add_user("alice", PW)
    failed, result = run_module(module, name="alice", password=NEW_PW)
    assert not failed, result
    assert result["changes"] == ["update password"]
    assert mlflow_api.users["alice"]["password"] == NEW_PW
    assert mlflow_api.mutations() == [UPDATE_PASSWORD]
    # An admin resets another user's password without the current one.
    assert "current_password" not in mlflow_api.requests[-1]["body"]


def test_update_password_on_create_leaves_an_existing_password(run_module, mlflow_api):
    mlflow_api.add_user("alice", PW)
    failed, result = run_module(module, name="alice", password=NEW_PW, update_password="on_create")
    assert not failed and result["changed"] is False
    assert mlflow_api.users["alice"]["password"] == PW
    assert not [r for r in mlflow_api.requests if r["path"] == "/api/2.0/mlflow/users/current"]


def test_no_password_leaves_an_existing_user_alone(run_module, mlflow_api):
    mlflow_api.add_user("alice", PW)
    failed, result = run_module(module, name="alice")
    assert not failed and result["changed"] is False
    assert mlflow_api.mutations() == []


def test_the_acting_admin_changes_its_own_password_with_the_current_one(run_module, mlflow_api):
    new_admin_pw = "admin-password-9"
    failed, result = run_module(module, name="admin", password=new_admin_pw, admin=True)
    assert not failed, result
    assert result["changes"] == ["update password"]
    assert mlflow_api.users["admin"]["password"] == new_admin_pw
    assert mlflow_api.requests[-1]["body"]["current_password"] == ADMIN_PASSWORD


@pytest.mark.parametrize("was_admin, admin, change", [(False, True, "set admin=True"), (True, False, "set admin=False")])
def test_admin_flag_follows_the_parameter(run_module, mlflow_api, was_admin, admin, change):
    mlflow_api.add_user("alice", PW, is_admin=was_admin)
    failed, result = run_module(module, name="alice", password=PW, admin=admin)
    assert not failed, result
    assert result["changes"] == [change]
    assert mlflow_api.users["alice"]["is_admin"] is admin
    assert result["user"]["is_admin"] is admin
    assert mlflow_api.mutations() == [UPDATE_ADMIN]


def test_refuses_to_demote_the_acting_admin(run_module, mlflow_api):
    failed, result = run_module(module, name="admin", admin=False)
    assert failed
    assert result["msg"] == "refusing to take admin rights from 'admin', the admin this module acts as"
    assert mlflow_api.users["admin"]["is_admin"] is True
    assert mlflow_api.mutations() == []


def test_role_assignments_are_reconciled_to_the_list(run_module, mlflow_api):
    mlflow_api.add_user("alice", PW)
    for name in ("readers", "writers", "old"):
        mlflow_api.add_role(name)
    mlflow_api.add_role("readers", workspace="team-b")
    mlflow_api.assign("alice", "writers")
    mlflow_api.assign("alice", "old")
    mlflow_api.assign("alice", "readers", workspace="team-b")
    mlflow_api.add_experiment("exp")
    mlflow_api.grant("alice", "experiment", "101", "READ")  # her synthetic __user_N__ role

    failed, result = run_module(module, name="alice", password=PW, roles=["readers", "writers", "readers"])
    assert not failed, result
    assert result["changes"] == ["assign role readers", "unassign role old"]
    assert mlflow_api.user_role_names("alice") == ["__user_%s__" % mlflow_api.users["alice"]["id"], "readers", "writers"]
    # Another workspace's roles and the direct grants are not the list's business.
    assert mlflow_api.user_role_names("alice", workspace="team-b") == ["readers"]
    assert mlflow_api.mutations() == [ASSIGN, UNASSIGN]


def test_roles_of_another_workspace(run_module, mlflow_api):
    mlflow_api.add_user("alice", PW)
    mlflow_api.add_role("readers", workspace="team-b")
    failed, result = run_module(module, name="alice", password=PW, roles=["readers"], workspace="team-b")
    assert not failed, result
    assert result["changes"] == ["assign role readers"]
    assert mlflow_api.user_role_names("alice", workspace="team-b") == ["readers"]


def test_omitted_roles_leave_assignments_alone(run_module, mlflow_api):
    mlflow_api.add_user("alice", PW)
    mlflow_api.add_role("old")
    mlflow_api.assign("alice", "old")
    failed, result = run_module(module, name="alice", password=PW)
    assert not failed and result["changed"] is False
    assert mlflow_api.user_role_names("alice") == ["old"]
    assert not [r for r in mlflow_api.requests if "/roles/" in r["path"]]


def test_an_unknown_role_fails_before_any_change(run_module, mlflow_api):
    mlflow_api.add_user("alice", PW)
    mlflow_api.add_role("readers", workspace="team-b")
    failed, result = run_module(module, name="alice", password=PW, roles=["readers"])
    assert failed
    assert result["msg"] == "roles ['readers'] do not exist in workspace 'default'"
    assert mlflow_api.mutations() == []


def test_deletes_a_user(run_module, mlflow_api):
    mlflow_api.add_user("temp", PW)
    failed, result = run_module(module, name="temp", state="absent")
    assert not failed, result
    assert result == {"changed": True, "changes": ["delete user"], "user": None}
    assert "temp" not in mlflow_api.users
    assert mlflow_api.mutations() == [DELETE]


def test_deleting_a_missing_user_changes_nothing(run_module, mlflow_api):
    failed, result = run_module(module, name="temp", state="absent")
    assert not failed and result["changed"] is False
    assert mlflow_api.mutations() == []


def test_refuses_to_delete_the_acting_admin(run_module, mlflow_api):
    failed, result = run_module(module, name="admin", state="absent")
    assert failed
    assert result["msg"] == "refusing to delete 'admin', the admin this module acts as"
    assert "admin" in mlflow_api.users


def test_creating_needs_a_password(run_module, mlflow_api):
    failed, result = run_module(module, name="alice")
    assert failed
    assert result["msg"] == "user 'alice' does not exist: a password is needed to create it"
    assert mlflow_api.mutations() == []


def test_a_short_password_fails_without_showing_it(run_module, mlflow_api):
    failed, result = run_module(module, name="alice", password="short-pw")
    assert failed
    assert result["msg"] == "password of user 'alice' must be at least 12 characters (MLflow's minimum)"
    assert "short-pw" not in json.dumps(result)
    assert mlflow_api.requests == []


def _arrange(mlflow_api, case):
    if case != "create":
        mlflow_api.add_user("alice", PW)
    mlflow_api.add_role("readers")
    mlflow_api.add_role("old")
    if case == "roles":
        mlflow_api.assign("alice", "old")


CHECK_MODE_CASES = {
    "create": (dict(password=PW, admin=True), ["create user"]),
    "password": (dict(password=NEW_PW), ["update password"]),
    "admin": (dict(password=PW, admin=True), ["set admin=True"]),
    "roles": (dict(password=PW, roles=["readers"]), ["assign role readers", "unassign role old"]),
    "delete": (dict(state="absent"), ["delete user"]),
}


@pytest.mark.parametrize("case", sorted(CHECK_MODE_CASES))
def test_check_mode_reports_without_changing(run_module, mlflow_api, case):
    params, changes = CHECK_MODE_CASES[case]
    _arrange(mlflow_api, case)
    users_before = dict((k, dict(v)) for k, v in mlflow_api.users.items())
    assignments_before = set(mlflow_api.assignments)

    failed, result = run_module(module, check_mode=True, name="alice", **params)
    assert not failed, result
    assert result["changed"] is True
    assert result["changes"] == changes
    assert mlflow_api.mutations() == []
    assert mlflow_api.users == users_before and mlflow_api.assignments == assignments_before


@pytest.mark.parametrize("case", sorted(CHECK_MODE_CASES))
@pytest.mark.parametrize("check_mode", [False, True])
def test_no_secret_in_the_result(run_module, mlflow_api, case, check_mode):
    params, changes = CHECK_MODE_CASES[case]
    _arrange(mlflow_api, case)
    failed, result = run_module(module, check_mode=check_mode, name="alice", **params)
    assert not failed, result
    for secret in (PW, NEW_PW, ADMIN_PASSWORD):
        assert secret not in json.dumps(result)


def test_wrong_admin_credentials(run_module, mlflow_api):
    failed, result = run_module(module, name="alice", password=PW, admin_password="not-the-admin-pw")
    assert failed
    assert result["msg"].startswith("user 'alice': the MLflow API rejected the admin credentials (HTTP 401)")
    assert "not-the-admin-pw" not in json.dumps(result) and PW not in json.dumps(result)
    assert mlflow_api.mutations() == []


def test_an_api_error_names_the_call_and_the_server_message(run_module, mlflow_api):
    mlflow_api.fail_once("POST", "/api/2.0/mlflow/users/create", 500,
                         {"error_code": "INTERNAL_ERROR", "message": "database is locked"})
    failed, result = run_module(module, name="alice", password=PW)
    assert failed
    assert result["msg"] == "user 'alice': POST /api/2.0/mlflow/users/create answered HTTP 500: database is locked"
    assert PW not in json.dumps(result)


def test_an_unreachable_api(run_module, mlflow_api):
    url = mlflow_api.url
    mlflow_api.close()
    failed, result = run_module(module, name="alice", password=PW, api_url=url + "/")
    assert failed
    assert result["msg"].startswith("user 'alice': cannot reach the MLflow API at %s: " % url)
