# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The connection options every mlflow_auth module takes (their code shares
CONNECTION_ARGS from plugins/module_utils/mlflow_auth_api.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  api_url:
    description: Base URL of the MLflow server.
    type: str
    default: http://127.0.0.1:5000
  admin_username:
    description: An MLflow admin the module acts as.
    type: str
    required: true
  admin_password:
    description: That admin's password.
    type: str
    required: true
  ca_path:
    description: CA bundle to verify an https api_url.
    type: path
  validate_certs:
    description: Verify the TLS certificate of an https api_url.
    type: bool
    default: true
  timeout:
    description: Seconds per HTTP request.
    type: int
    default: 30
"""
