# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the unit tests of the collection's plugins. They run under the
repository's pytest (make test) and under `ansible-test units` in an installed copy
of the collection; both import the plugins by their full names
(ansible_collections.mlflow_aws.mlflow...)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys

import pytest


def _collection_importable():
    """In the repository, .collections/ansible_collections/mlflow_aws/mlflow links to the
    root: put .collections on sys.path (ansible_collections is a namespace package).
    ansible-test units installs Ansible's collection loader itself."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    link_root = os.path.join(root, ".collections")
    if os.path.isdir(os.path.join(link_root, "ansible_collections", "mlflow_aws", "mlflow")) and link_root not in sys.path:
        sys.path.insert(0, link_root)


_collection_importable()

ADMIN = "admin"
ADMIN_PASSWORD = "admin-password-0"


class ModuleExit(Exception):
    """exit_json / fail_json, with the result as the module built it (before
    AnsibleModule masks no_log values), so a test sees a secret a module would leak."""

    def __init__(self, failed, result):
        super(ModuleExit, self).__init__(result.get("msg", ""))
        self.failed = failed
        self.result = result


@pytest.fixture
def mlflow_api():
    from ansible_collections.mlflow_aws.mlflow.tests.unit.plugins.fake_mlflow_auth_api import FakeMlflowAuthApi

    fake = FakeMlflowAuthApi(ADMIN, ADMIN_PASSWORD).serve()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def run_module(mlflow_api, monkeypatch):
    """run_module(module, check_mode=False, **params) -> (failed, result).
    Connection options default to the fake API as its admin. result is what the module
    passed to exit_json / fail_json, before no_log masking: a secret in it is a leak."""
    from ansible.module_utils import basic
    from ansible.module_utils.testing import patch_module_args

    def exit_json(self, **kwargs):
        raise ModuleExit(False, kwargs)

    def fail_json(self, msg, **kwargs):
        kwargs["msg"] = msg
        raise ModuleExit(True, kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def run(module, check_mode=False, **params):
        args = dict(api_url=mlflow_api.url, admin_username=ADMIN, admin_password=ADMIN_PASSWORD, timeout=5)
        args.update(params)
        if check_mode:
            args["_ansible_check_mode"] = True
        with patch_module_args(args):
            with pytest.raises(ModuleExit) as exc:
                module.main()
        result = exc.value.result
        result.setdefault("changed", False)
        return exc.value.failed, result

    return run
