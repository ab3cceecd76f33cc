# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""A fake of MLflow 3.17's basic-auth REST API, served over HTTP on loopback, for the
unit tests of the mlflow_auth modules. It keeps users, roles, role grants, experiments
and registered models in memory, enforces basic auth (admin for everything but
users/current) and records every request, so a test can assert what a module asked
for and what it changed. Response shapes follow mlflow/server/auth (entities'
to_json, the handlers' jsonify); errors are MLflow's {error_code, message} JSON."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

SYNTHETIC = "__user_%s__"
MUTATING = ("POST", "PATCH", "DELETE", "PUT")


class ApiError(Exception):
    def __init__(self, status, error_code, message):
        super(ApiError, self).__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def not_found(message):
    return ApiError(404, "RESOURCE_DOES_NOT_EXIST", message)


def bad_request(message, error_code="INVALID_PARAMETER_VALUE"):
    return ApiError(400, error_code, message)


class FakeMlflowAuthApi(object):
    """State plus the route table. url is set once serve() has started."""

    def __init__(self, admin_username="admin", admin_password="admin-password-0"):
        self.lock = threading.Lock()
        self.users = {}
        self.roles = {}
        self.assignments = set()  # (user_id, role_id)
        self.experiments = {"Default": "0"}
        self.models = set()
        self.requests = []  # dicts: method, path, query, body, user
        self.failures = {}  # (method, path) -> (status, body): answered once instead
        self._ids = {"user": 0, "role": 0, "role_permission": 0, "experiment": 0}
        self.url = None
        self._server = None
        self._thread = None
        self.add_user(admin_username, admin_password, is_admin=True)

    # ---- state helpers (tests call these to arrange a situation) ----
    def _next(self, kind):
        self._ids[kind] += 1
        return self._ids[kind]

    def add_user(self, username, password, is_admin=False):
        user = {"id": self._next("user"), "username": username, "password": password, "is_admin": is_admin}
        self.users[username] = user
        return user

    def add_role(self, name, workspace="default", description=None, permissions=()):
        role = {"id": self._next("role"), "name": name, "workspace": workspace,
                "description": description, "permissions": []}
        self.roles[role["id"]] = role
        for resource_type, pattern, permission in permissions:
            self._add_role_permission(role, resource_type, pattern, permission)
        return role

    def _add_role_permission(self, role, resource_type, pattern, permission):
        for rp in role["permissions"]:
            if (rp["resource_type"], rp["resource_pattern"]) == (resource_type, pattern):
                raise bad_request("Role permission for %s %s already exists" % (resource_type, pattern),
                                  "RESOURCE_ALREADY_EXISTS")
        rp = {"id": self._next("role_permission"), "role_id": role["id"], "resource_type": resource_type,
              "resource_pattern": pattern, "permission": permission}
        role["permissions"].append(rp)
        return rp

    def assign(self, username, role_name, workspace="default"):
        role = self.role_named(role_name, workspace)
        self.assignments.add((self.users[username]["id"], role["id"]))

    def add_experiment(self, name):
        exp_id = str(100 + self._next("experiment"))
        self.experiments[name] = exp_id
        return exp_id

    def role_named(self, name, workspace="default"):
        for role in self.roles.values():
            if role["name"] == name and role["workspace"] == workspace:
                return role
        return None

    def grant(self, username, resource_type, resource_id, permission):
        """A direct grant, as POST users/permissions/grant writes it."""
        user = self.users[username]
        role = self.role_named(SYNTHETIC % user["id"])
        if role is None:
            role = self.add_role(SYNTHETIC % user["id"])
            self.assignments.add((user["id"], role["id"]))
        self._add_role_permission(role, resource_type, resource_id, permission)

    def direct_grants(self, username):
        """{(resource_type, pattern): permission} of the user's synthetic role."""
        role = self.role_named(SYNTHETIC % self.users[username]["id"])
        if role is None:
            return {}
        return dict(((rp["resource_type"], rp["resource_pattern"]), rp["permission"]) for rp in role["permissions"])

    def user_role_names(self, username, workspace="default"):
        uid = self.users[username]["id"]
        return sorted(r["name"] for r in self.roles.values()
                      if (uid, r["id"]) in self.assignments and r["workspace"] == workspace)

    def mutations(self):
        return [(r["method"], r["path"]) for r in self.requests if r["method"] in MUTATING]

    def fail_once(self, method, path, status, body):
        self.failures[(method, path)] = (status, body)

    # ---- serving ----
    def serve(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _handle(self):
                status, body = fake.dispatch(self.command, self.path, self.headers, self._body())
                raw = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.url = "http://127.0.0.1:%s" % self._server.server_address[1]
        return self

    def close(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)

    # ---- request handling ----
    def _authenticate(self, headers):
        match = re.match(r"^Basic (\S+)$", headers.get("Authorization") or "")
        if not match:
            return None
        username, sep, password = base64.b64decode(match.group(1)).decode("utf-8").partition(":")
        user = self.users.get(username)
        if not sep or user is None or user["password"] != password:
            return None
        return user

    def dispatch(self, method, raw_path, headers, raw_body):
        url = urlparse(raw_path)
        query = dict((k, v[0]) for k, v in parse_qs(url.query).items())
        try:
            body = json.loads(raw_body.decode("utf-8")) if raw_body else {}
        except ValueError:
            return 400, {"error_code": "MALFORMED_REQUEST", "message": "body is not JSON"}
        with self.lock:
            sender = self._authenticate(headers)
            self.requests.append({"method": method, "path": url.path, "query": query, "body": body,
                                  "user": sender["username"] if sender else None})
            if (method, url.path) in self.failures:
                return self.failures.pop((method, url.path))
            if sender is None:
                return 401, "You are not authenticated. Please see the documentation."
            route = ROUTES.get((method, url.path))
            if route is None:
                return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": "no route %s %s" % (method, url.path)}
            if url.path != "/api/2.0/mlflow/users/current" and not sender["is_admin"]:
                return 403, "Permission denied"
            params = dict(query)
            params.update(body)
            try:
                return 200, route(self, sender, params)
            except ApiError as exc:
                return exc.status, {"error_code": exc.error_code, "message": exc.message}
            except KeyError as exc:
                return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "Missing value for required parameter %s" % exc}

    def _user(self, username):
        if username not in self.users:
            raise not_found("User with username=%s not found" % username)
        return self.users[username]

    def _role(self, role_id):
        role = self.roles.get(int(role_id))
        if role is None:
            raise not_found("Role with id=%s not found" % role_id)
        return role

    @staticmethod
    def _user_json(user):
        return {"id": user["id"], "username": user["username"], "is_admin": user["is_admin"]}

    @staticmethod
    def _role_json(role):
        return {"id": role["id"], "name": role["name"], "workspace": role["workspace"],
                "description": role["description"], "permissions": [dict(p) for p in role["permissions"]]}

    # users
    def h_current(self, sender, params):
        return {"user": self._user_json(sender)}

    def h_get_user(self, sender, params):
        return {"user": self._user_json(self._user(params["username"]))}

    def h_create_user(self, sender, params):
        if params["username"] in self.users:
            raise bad_request("User '%s' already exists" % params["username"], "RESOURCE_ALREADY_EXISTS")
        return {"user": self._user_json(self.add_user(params["username"], params["password"]))}

    def h_update_password(self, sender, params):
        user = self._user(params["username"])
        if sender["username"] == user["username"]:
            if not params.get("current_password"):
                raise bad_request("Current password is required when changing your own password.")
            if params["current_password"] != user["password"]:
                raise bad_request("Current password does not match.")
        user["password"] = params["password"]
        return {}

    def h_update_admin(self, sender, params):
        self._user(params["username"])["is_admin"] = bool(params["is_admin"])
        return {}

    def h_delete_user(self, sender, params):
        user = self._user(params["username"])
        if user["username"] == sender["username"]:
            raise bad_request("Users cannot delete their own account.", "BAD_REQUEST")
        del self.users[user["username"]]
        self.assignments = set(a for a in self.assignments if a[0] != user["id"])
        return {}

    def h_list_users(self, sender, params):
        # list_users in mlflow/server/auth: every user with the roles it holds (grants included).
        return {"users": [dict(self._user_json(u), roles=[self._role_json(r) for r in self.roles.values()
                                                          if (u["id"], r["id"]) in self.assignments])
                          for u in self.users.values()]}

    def h_list_user_permissions(self, sender, params):
        user = self._user(params["username"])
        rows = [{"role_id": r["id"], "role_name": r["name"], "workspace": r["workspace"],
                 "resource_type": rp["resource_type"], "resource_pattern": rp["resource_pattern"],
                 "permission": rp["permission"]}
                for r in self.roles.values() if (user["id"], r["id"]) in self.assignments
                for rp in r["permissions"]]
        return {"is_admin": user["is_admin"], "permissions": rows}

    def h_grant(self, sender, params):
        self._user(params["username"])
        self.grant(params["username"], params["resource_type"], params["resource_id"], params["permission"])
        return {}

    def h_revoke(self, sender, params):
        user = self._user(params["username"])
        role = self.role_named(SYNTHETIC % user["id"])
        for rp in (role or {"permissions": []})["permissions"]:
            if (rp["resource_type"], rp["resource_pattern"]) == (params["resource_type"], params["resource_id"]):
                role["permissions"].remove(rp)
                return {}
        raise not_found("No direct grant on %s %s" % (params["resource_type"], params["resource_id"]))

    # roles
    def h_list_roles(self, sender, params):
        return {"roles": [self._role_json(r) for r in self.roles.values()
                          if r["workspace"] == params.get("workspace", r["workspace"])]}

    def h_create_role(self, sender, params):
        if self.role_named(params["name"], params["workspace"]) is not None:
            raise bad_request("Role '%s' already exists" % params["name"], "RESOURCE_ALREADY_EXISTS")
        return {"role": self._role_json(self.add_role(params["name"], params["workspace"], params.get("description")))}

    def h_update_role(self, sender, params):
        role = self._role(params["role_id"])
        role["description"] = params["description"]
        return {"role": self._role_json(role)}

    def h_delete_role(self, sender, params):
        role = self._role(params["role_id"])
        del self.roles[role["id"]]
        self.assignments = set(a for a in self.assignments if a[1] != role["id"])
        return {}

    def h_add_role_permission(self, sender, params):
        role = self._role(params["role_id"])
        return {"role_permission": self._add_role_permission(
            role, params["resource_type"], params["resource_pattern"], params["permission"])}

    def _role_permission(self, rp_id):
        for role in self.roles.values():
            for rp in role["permissions"]:
                if rp["id"] == int(rp_id):
                    return role, rp
        raise not_found("Role permission with id=%s not found" % rp_id)

    def h_update_role_permission(self, sender, params):
        rp = self._role_permission(params["role_permission_id"])[1]
        rp["permission"] = params["permission"]
        return {"role_permission": dict(rp)}

    def h_remove_role_permission(self, sender, params):
        role, rp = self._role_permission(params["role_permission_id"])
        role["permissions"].remove(rp)
        return {}

    def h_list_user_roles(self, sender, params):
        user = self._user(params["username"])
        return {"roles": [self._role_json(r) for r in self.roles.values() if (user["id"], r["id"]) in self.assignments]}

    def h_assign(self, sender, params):
        user, role = self._user(params["username"]), self._role(params["role_id"])
        if (user["id"], role["id"]) in self.assignments:
            raise bad_request("Role already assigned", "RESOURCE_ALREADY_EXISTS")
        self.assignments.add((user["id"], role["id"]))
        return {"assignment": {"user_id": user["id"], "role_id": role["id"]}}

    def h_unassign(self, sender, params):
        user, role = self._user(params["username"]), self._role(params["role_id"])
        if (user["id"], role["id"]) not in self.assignments:
            raise not_found("Role not assigned")
        self.assignments.discard((user["id"], role["id"]))
        return {}

    # resources
    def h_get_experiment_by_name(self, sender, params):
        name = params["experiment_name"]
        if name not in self.experiments:
            raise not_found("Could not find experiment with name '%s'" % name)
        return {"experiment": {"experiment_id": self.experiments[name], "name": name}}

    def h_get_experiment(self, sender, params):
        for name, exp_id in self.experiments.items():
            if exp_id == params["experiment_id"]:
                return {"experiment": {"experiment_id": exp_id, "name": name}}
        raise not_found("No Experiment with id=%s exists" % params["experiment_id"])

    def h_create_experiment(self, sender, params):
        if params["name"] in self.experiments:
            raise bad_request("Experiment '%s' already exists." % params["name"], "RESOURCE_ALREADY_EXISTS")
        return {"experiment_id": self.add_experiment(params["name"])}

    def h_get_model(self, sender, params):
        if params["name"] not in self.models:
            raise not_found("Registered Model with name=%s not found" % params["name"])
        return {"registered_model": {"name": params["name"]}}

    def h_create_model(self, sender, params):
        if params["name"] in self.models:
            raise bad_request("Registered Model (name=%s) already exists." % params["name"], "RESOURCE_ALREADY_EXISTS")
        self.models.add(params["name"])
        return {"registered_model": {"name": params["name"]}}


ROUTES = {
    ("GET", "/api/2.0/mlflow/users/current"): FakeMlflowAuthApi.h_current,
    ("GET", "/api/2.0/mlflow/users/get"): FakeMlflowAuthApi.h_get_user,
    ("POST", "/api/2.0/mlflow/users/create"): FakeMlflowAuthApi.h_create_user,
    ("PATCH", "/api/2.0/mlflow/users/update-password"): FakeMlflowAuthApi.h_update_password,
    ("PATCH", "/api/2.0/mlflow/users/update-admin"): FakeMlflowAuthApi.h_update_admin,
    ("DELETE", "/api/2.0/mlflow/users/delete"): FakeMlflowAuthApi.h_delete_user,
    ("GET", "/api/2.0/mlflow/users/list"): FakeMlflowAuthApi.h_list_users,
    ("GET", "/api/3.0/mlflow/users/permissions/list"): FakeMlflowAuthApi.h_list_user_permissions,
    ("POST", "/api/3.0/mlflow/users/permissions/grant"): FakeMlflowAuthApi.h_grant,
    ("POST", "/api/3.0/mlflow/users/permissions/revoke"): FakeMlflowAuthApi.h_revoke,
    ("GET", "/api/3.0/mlflow/roles/list"): FakeMlflowAuthApi.h_list_roles,
    ("POST", "/api/3.0/mlflow/roles/create"): FakeMlflowAuthApi.h_create_role,
    ("PATCH", "/api/3.0/mlflow/roles/update"): FakeMlflowAuthApi.h_update_role,
    ("DELETE", "/api/3.0/mlflow/roles/delete"): FakeMlflowAuthApi.h_delete_role,
    ("POST", "/api/3.0/mlflow/roles/permissions/add"): FakeMlflowAuthApi.h_add_role_permission,
    ("PATCH", "/api/3.0/mlflow/roles/permissions/update"): FakeMlflowAuthApi.h_update_role_permission,
    ("DELETE", "/api/3.0/mlflow/roles/permissions/remove"): FakeMlflowAuthApi.h_remove_role_permission,
    ("GET", "/api/3.0/mlflow/users/roles/list"): FakeMlflowAuthApi.h_list_user_roles,
    ("POST", "/api/3.0/mlflow/roles/assign"): FakeMlflowAuthApi.h_assign,
    ("DELETE", "/api/3.0/mlflow/roles/unassign"): FakeMlflowAuthApi.h_unassign,
    ("GET", "/api/2.0/mlflow/experiments/get-by-name"): FakeMlflowAuthApi.h_get_experiment_by_name,
    ("GET", "/api/2.0/mlflow/experiments/get"): FakeMlflowAuthApi.h_get_experiment,
    ("POST", "/api/2.0/mlflow/experiments/create"): FakeMlflowAuthApi.h_create_experiment,
    ("GET", "/api/2.0/mlflow/registered-models/get"): FakeMlflowAuthApi.h_get_model,
    ("POST", "/api/2.0/mlflow/registered-models/create"): FakeMlflowAuthApi.h_create_model,
}
