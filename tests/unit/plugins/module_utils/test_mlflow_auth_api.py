# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The HTTP client the mlflow_auth modules share, against the fake MLflow auth API."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.mlflow_aws.mlflow.plugins.module_utils import mlflow_auth_api as api

ADMIN_PASSWORD = "admin-password-0"


@pytest.fixture
def client(mlflow_api):
    return api.MlflowAuthClient(mlflow_api.url + "/", "admin", ADMIN_PASSWORD, timeout=5)


def test_requests_authenticate_as_the_admin_and_send_json(client, mlflow_api):
    assert client.create_user("alice", "alice-password-1") == {"id": 2, "username": "alice", "is_admin": False}
    request = mlflow_api.requests[-1]
    assert request["user"] == "admin"
    assert request["body"] == {"username": "alice", "password": "alice-password-1"}


def test_query_parameters_are_encoded(client, mlflow_api):
    mlflow_api.add_user("a b&c=d", "some-password-1")
    assert client.get_user("a b&c=d")["username"] == "a b&c=d"
    assert mlflow_api.requests[-1]["query"] == {"username": "a b&c=d"}
    assert client.get_user("nobody") is None


def test_check_credentials_logs_in_as_the_user(client, mlflow_api):
    mlflow_api.add_user("alice", "alice-password-1")
    assert client.check_credentials("alice", "alice-password-1") is True
    assert client.check_credentials("alice", "wrong-password-1") is False
    assert client.check_credentials("nobody", "alice-password-1") is False
    assert [r["user"] for r in mlflow_api.requests] == ["alice", None, None]


def test_rejected_admin_credentials(mlflow_api):
    client = api.MlflowAuthClient(mlflow_api.url, "admin", "wrong-password-1")
    with pytest.raises(api.MlflowAuthError) as exc:
        client.get_user("alice")
    assert exc.value.status == 401
    assert "rejected the admin credentials (HTTP 401)" in str(exc.value)
    assert "wrong-password-1" not in str(exc.value)


def test_an_admin_that_is_not_an_admin(mlflow_api):
    mlflow_api.add_user("bob", "bob-password-12")
    client = api.MlflowAuthClient(mlflow_api.url, "bob", "bob-password-12")
    with pytest.raises(api.MlflowAuthError) as exc:
        client.list_roles("default")
    assert str(exc.value) == "GET /api/3.0/mlflow/roles/list answered HTTP 403: Permission denied"


def test_json_error_message(client, mlflow_api):
    mlflow_api.fail_once("DELETE", "/api/3.0/mlflow/roles/delete", 404,
                         {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Role with id=9 not found"})
    with pytest.raises(api.MlflowAuthError) as exc:
        client.delete_role(9)
    assert str(exc.value) == "DELETE /api/3.0/mlflow/roles/delete answered HTTP 404: Role with id=9 not found"
    assert exc.value.body["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_text_error_message(client, mlflow_api):
    mlflow_api.fail_once("GET", "/api/3.0/mlflow/roles/list", 502, "Bad Gateway")
    with pytest.raises(api.MlflowAuthError) as exc:
        client.list_roles("default")
    assert str(exc.value) == "GET /api/3.0/mlflow/roles/list answered HTTP 502: Bad Gateway"


def test_unreachable(mlflow_api):
    url = mlflow_api.url
    mlflow_api.close()
    client = api.MlflowAuthClient(url, "admin", ADMIN_PASSWORD, timeout=2)
    with pytest.raises(api.MlflowAuthError) as exc:
        client.get_user("alice")
    assert str(exc.value).startswith("cannot reach the MLflow API at %s: " % url)
    assert exc.value.status is None


def test_resolve_pattern(client, mlflow_api):
    exp_id = mlflow_api.add_experiment("churn")
    mlflow_api.models.add("churn-model")
    assert client.resolve_pattern("experiment", "churn", False, False) == (exp_id, False)
    assert client.resolve_pattern("experiment", "*", False, False) == ("*", False)
    assert client.resolve_pattern("registered_model", "churn-model", False, False) == ("churn-model", False)
    assert client.resolve_pattern("prompt", "anything", False, False) == ("anything", False)
    assert mlflow_api.mutations() == []
    # check mode: a new experiment has no id yet; a new model is named by its name
    assert client.resolve_pattern("experiment", "new", True, True) == (None, True)
    assert client.resolve_pattern("registered_model", "new", True, True) == ("new", True)
    assert mlflow_api.mutations() == []
    created = client.resolve_pattern("experiment", "new", True, False)
    assert created == (mlflow_api.experiments["new"], True)
    assert client.resolve_pattern("registered_model", "new", True, False) == ("new", True)
    assert "new" in mlflow_api.models


@pytest.mark.parametrize("url, expect_tls", [("https://mlflow.example.test", True), ("http://127.0.0.1:5000", False)])
def test_tls_options_build_one_context(monkeypatch, url, expect_tls):
    calls = []

    def make_context(**kwargs):
        calls.append(kwargs)
        return "context"

    monkeypatch.setattr(api, "make_context", make_context)
    client = api.MlflowAuthClient(url, "admin", ADMIN_PASSWORD, ca_path="/etc/ca.pem", validate_certs=False)
    first = client._ssl_context()
    assert client._ssl_context() is first
    if expect_tls:
        assert calls == [{"cafile": "/etc/ca.pem", "validate_certs": False}]
    else:
        assert calls == [] and first.verify_mode is not None
