# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Jinja tests for CIDR blocks, based on Python's ipaddress (no netaddr needed).
Documented per test in the sidecar files aws_cidr.yml, aws_cidr_within.yml and
aws_cidr_anywhere.yml (ansible-doc -t test mlflow_aws.mlflow.aws_cidr).

- ``'10.0.0.0/16' is aws_cidr``: a network address with a prefix (IPv4 or IPv6),
  host bits zero, as AWS expects it.
- ``'10.0.1.0/24' is aws_cidr_within('10.0.0.0/16')``: a valid CIDR inside another.
- ``'0.0.0.0/0' is aws_cidr_anywhere``: a /0 block (the whole internet).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress


def _net(value):
    if not isinstance(value, str) or "/" not in value:
        return None
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError:
        return None


def aws_cidr(value):
    return _net(value) is not None


def aws_cidr_within(value, outer):
    inner, container = _net(value), _net(outer)
    if inner is None or container is None or inner.version != container.version:
        return False
    return inner.subnet_of(container)


def aws_cidr_anywhere(value):
    net = _net(value)
    return net is not None and net.prefixlen == 0


class TestModule(object):
    def tests(self):
        return {
            "aws_cidr": aws_cidr,
            "aws_cidr_within": aws_cidr_within,
            "aws_cidr_anywhere": aws_cidr_anywhere,
        }
