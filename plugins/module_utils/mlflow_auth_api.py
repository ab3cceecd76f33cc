# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Minimal client of MLflow's basic-auth REST API (MLflow 3.17). HTTP goes through
ansible.module_utils.urls (standard library underneath), so the modules run on the
target's system python3 without extra packages."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import ssl
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import Request, make_context

DEFAULT_WORKSPACE = "default"
SYNTHETIC_ROLE_RE = re.compile(r"^__user_\d+__$")

# The argument_spec every module shares: how to reach the API and as whom.
CONNECTION_ARGS = dict(
    api_url=dict(type="str", default="http://127.0.0.1:5000"),
    admin_username=dict(type="str", required=True),
    admin_password=dict(type="str", required=True, no_log=True),
    ca_path=dict(type="path"),
    validate_certs=dict(type="bool", default=True),
    timeout=dict(type="int", default=30),
)

# Resource types grants can name, and how to find a resource's grant pattern.
RESOURCE_TYPES = ("experiment", "registered_model", "prompt", "scorer", "workspace")
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "DENY")


class MlflowAuthError(Exception):
    def __init__(self, message, status=None, body=None):
        super(MlflowAuthError, self).__init__(message)
        self.status = status
        self.body = body


class MlflowAuthClient:
    def __init__(self, api_url, admin_username, admin_password, ca_path=None, validate_certs=True, timeout=30):
        self.api_url = api_url.rstrip("/")
        self.admin = (admin_username, admin_password)
        self.http = Request(timeout=timeout, validate_certs=validate_certs, ca_path=ca_path,
                            force_basic_auth=True, use_netrc=False)
        self._tls = (ca_path, validate_certs)
        self._context = None

    def _ssl_context(self):
        """Built once per client: open_url would load the CA store again on every request.
        A plain http:// API gets a context that trusts nothing (a redirect to https fails)."""
        if self._context is None:
            if self.api_url.startswith("https://"):
                self._context = make_context(cafile=self._tls[0], validate_certs=self._tls[1])
            else:
                self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return self._context

    def request(self, method, path, params=None, body=None, credentials=None, ok=(200,)):
        """Return (status, parsed JSON or text). Raise MlflowAuthError unless status is in ok."""
        url = self.api_url + path
        if params:
            url += "?" + urlencode(params)
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        username, password = credentials or self.admin
        try:
            resp = self.http.open(method, url, data=data, headers=headers, url_username=username,
                                  url_password=password, context=self._ssl_context())
            status, raw = resp.status, resp.read()
        except HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (URLError, UrlsConnectionError, OSError) as exc:
            raise MlflowAuthError("cannot reach the MLflow API at %s: %s" % (self.api_url, exc))
        text = raw.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text else {}
        except ValueError:
            parsed = text
        if status not in ok:
            if status == 401 and credentials is None:
                raise MlflowAuthError(
                    "the MLflow API rejected the admin credentials (HTTP 401): check admin_username / "
                    "admin_password (the mlflow_auth role: mlflow_auth_admin_username / mlflow_auth_admin_password)",
                    status, parsed)
            message = parsed.get("message") if isinstance(parsed, dict) else text
            raise MlflowAuthError("%s %s answered HTTP %s: %s" % (method, path, status, message), status, parsed)
        return status, parsed

    # ---- users ----
    def check_credentials(self, username, password):
        """True when username/password authenticate (the stored password matches)."""
        status = self.request("GET", "/api/2.0/mlflow/users/current",
                              credentials=(username, password), ok=(200, 401, 403))[0]
        return status == 200

    def get_user(self, username):
        status, body = self.request("GET", "/api/2.0/mlflow/users/get", params={"username": username}, ok=(200, 404))
        return body["user"] if status == 200 else None

    def create_user(self, username, password):
        return self.request("POST", "/api/2.0/mlflow/users/create", body={"username": username, "password": password})[1]["user"]

    def update_password(self, username, password, current_password=None):
        body = {"username": username, "password": password}
        if current_password is not None:
            body["current_password"] = current_password
        self.request("PATCH", "/api/2.0/mlflow/users/update-password", body=body)

    def update_admin(self, username, is_admin):
        self.request("PATCH", "/api/2.0/mlflow/users/update-admin", body={"username": username, "is_admin": is_admin})

    def delete_user(self, username):
        self.request("DELETE", "/api/2.0/mlflow/users/delete", body={"username": username})

    def list_users(self):
        """Every user with the roles it holds, each role with its grants (one call)."""
        return self.request("GET", "/api/2.0/mlflow/users/list")[1].get("users", [])

    def list_user_permissions(self, username):
        return self.request("GET", "/api/3.0/mlflow/users/permissions/list", params={"username": username})[1].get("permissions", [])

    def grant(self, username, resource_type, resource_id, permission):
        self.request("POST", "/api/3.0/mlflow/users/permissions/grant", body={
            "username": username, "resource_type": resource_type,
            "resource_id": resource_id, "permission": permission})

    def revoke(self, username, resource_type, resource_id):
        self.request("POST", "/api/3.0/mlflow/users/permissions/revoke", body={
            "username": username, "resource_type": resource_type, "resource_id": resource_id})

    # ---- roles ----
    def list_roles(self, workspace):
        return self.request("GET", "/api/3.0/mlflow/roles/list", params={"workspace": workspace})[1].get("roles", [])

    def create_role(self, workspace, name, description):
        body = {"workspace": workspace, "name": name}
        if description is not None:
            body["description"] = description
        return self.request("POST", "/api/3.0/mlflow/roles/create", body=body)[1]["role"]

    def update_role(self, role_id, description):
        self.request("PATCH", "/api/3.0/mlflow/roles/update", body={"role_id": role_id, "description": description})

    def delete_role(self, role_id):
        self.request("DELETE", "/api/3.0/mlflow/roles/delete", body={"role_id": role_id})

    def add_role_permission(self, role_id, resource_type, pattern, permission):
        self.request("POST", "/api/3.0/mlflow/roles/permissions/add", body={
            "role_id": role_id, "resource_type": resource_type,
            "resource_pattern": pattern, "permission": permission})

    def update_role_permission(self, role_permission_id, permission):
        self.request("PATCH", "/api/3.0/mlflow/roles/permissions/update", body={
            "role_permission_id": role_permission_id, "permission": permission})

    def remove_role_permission(self, role_permission_id):
        self.request("DELETE", "/api/3.0/mlflow/roles/permissions/remove", body={"role_permission_id": role_permission_id})

    def list_user_roles(self, username):
        return self.request("GET", "/api/3.0/mlflow/users/roles/list", params={"username": username})[1].get("roles", [])

    def assign_role(self, username, role_id):
        self.request("POST", "/api/3.0/mlflow/roles/assign", body={"username": username, "role_id": role_id})

    def unassign_role(self, username, role_id):
        self.request("DELETE", "/api/3.0/mlflow/roles/unassign", body={"username": username, "role_id": role_id})

    # ---- resources ----
    def experiment_id(self, name):
        """The id of the experiment named name, None when there is none."""
        status, body = self.request("GET", "/api/2.0/mlflow/experiments/get-by-name",
                                    params={"experiment_name": name}, ok=(200, 404))
        return body["experiment"]["experiment_id"] if status == 200 else None

    def experiment_name(self, experiment_id):
        """The name of the experiment with that id, None when it cannot be read."""
        status, body = self.request("GET", "/api/2.0/mlflow/experiments/get",
                                    params={"experiment_id": experiment_id}, ok=(200, 400, 404))
        return body["experiment"]["name"] if status == 200 and isinstance(body, dict) and "experiment" in body else None

    def resolve_pattern(self, resource_type, resource, create_missing, check_mode):
        """Map a resource name to the grant pattern MLflow stores: experiments by id,
        the others by name. Returns (pattern, created). pattern is None when the
        experiment would be created (check mode)."""
        if resource == "*" or resource_type not in ("experiment", "registered_model"):
            return resource, False
        if resource_type == "experiment":
            experiment_id = self.experiment_id(resource)
            if experiment_id is not None:
                return experiment_id, False
            if not create_missing:
                raise MlflowAuthError("experiment '%s' does not exist (create_missing is off)" % resource)
            if check_mode:
                return None, True
            body = self.request("POST", "/api/2.0/mlflow/experiments/create", body={"name": resource})[1]
            return body["experiment_id"], True
        status = self.request("GET", "/api/2.0/mlflow/registered-models/get", params={"name": resource}, ok=(200, 404))[0]
        if status == 200:
            return resource, False
        if not create_missing:
            raise MlflowAuthError("registered model '%s' does not exist (create_missing is off)" % resource)
        if not check_mode:
            self.request("POST", "/api/2.0/mlflow/registered-models/create", body={"name": resource})
        return resource, True


def client_from_module(module):
    p = module.params
    return MlflowAuthClient(p["api_url"], p["admin_username"], p["admin_password"],
                            ca_path=p.get("ca_path"), validate_certs=p["validate_certs"], timeout=p["timeout"])


def run_module(argument_spec, run, subject, **module_kwargs):
    """main() of every mlflow_auth module: its options plus CONNECTION_ARGS, check mode,
    result = run(module, client), and an MlflowAuthError failing the task with
    "<subject(params)>: <error>"."""
    spec = dict(CONNECTION_ARGS)
    spec.update(argument_spec)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True, **module_kwargs)
    try:
        module.exit_json(**run(module, client_from_module(module)))
    except MlflowAuthError as exc:
        module.fail_json(msg="%s: %s" % (subject(module.params), exc))
