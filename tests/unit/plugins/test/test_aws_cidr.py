# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The aws_cidr Jinja tests."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.mlflow_aws.mlflow.plugins.test import aws_cidr


@pytest.mark.parametrize("value, expected", [
    ("10.0.0.0/16", True), ("2001:db8::/56", True), (" 10.0.0.0/16 ", True), ("0.0.0.0/0", True),
    ("10.0.0.1/16", False), ("10.0.0.0", False), ("10.0.0.0/33", False), ("", False), (None, False), (16, False),
])
def test_aws_cidr(value, expected):
    assert aws_cidr.aws_cidr(value) is expected


@pytest.mark.parametrize("value, outer, expected", [
    ("10.0.1.0/24", "10.0.0.0/16", True), ("10.0.0.0/16", "10.0.0.0/16", True),
    ("10.1.0.0/24", "10.0.0.0/16", False), ("10.0.0.0/8", "10.0.0.0/16", False),
    ("2001:db8::/64", "10.0.0.0/16", False), ("10.0.1.1/24", "10.0.0.0/16", False), ("10.0.1.0/24", "bad", False),
])
def test_aws_cidr_within(value, outer, expected):
    assert aws_cidr.aws_cidr_within(value, outer) is expected


@pytest.mark.parametrize("value, expected", [("0.0.0.0/0", True), ("::/0", True), ("10.0.0.0/8", False), ("any", False)])
def test_aws_cidr_anywhere(value, expected):
    assert aws_cidr.aws_cidr_anywhere(value) is expected


def test_the_plugin_exposes_the_three_tests():
    assert sorted(aws_cidr.TestModule().tests()) == ["aws_cidr", "aws_cidr_anywhere", "aws_cidr_within"]
