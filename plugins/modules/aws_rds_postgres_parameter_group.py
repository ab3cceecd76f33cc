#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) mlflow-aws team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Small, emulator-friendly replacement for amazon.aws.rds_instance_param_group."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: aws_rds_postgres_parameter_group
short_description: Manage an RDS DB parameter group and its user-set parameters
description:
  - Creates, updates (user parameters and tags) or deletes a DB parameter group.
  - Compares only parameters set by the user (C(Source=user)), so it does not depend on the
    engine-default parameter list, which the moto emulator does not serve, and treats an empty
    C(DescribeDBParameterGroups) answer as "not found" (moto) as well as the real error code.
options:
  name: {description: Group name., type: str, required: true}
  family: {description: Parameter group family such as C(postgres16) (on creation)., type: str}
  description: {description: Group description (on creation)., type: str, default: ""}
  parameters: {description: Parameters to set (name to value)., type: dict, default: {}}
  apply_method: {description: ApplyMethod of the changes., type: str, default: immediate, choices: [immediate, pending-reboot]}
  tags: {description: Tags of the group (others are removed)., type: dict, default: {}}
  state: {description: Whether the group exists., type: str, default: present, choices: [present, absent]}
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author: mlflow-aws team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: PostgreSQL 16 parameters forcing TLS
  mlflow_aws.mlflow.aws_rds_postgres_parameter_group:
    name: demo-postgres16
    family: postgres16
    parameters: {rds.force_ssl: "1"}
"""

RETURN = r"""
arn: {description: ARN of the group., returned: state present, type: str}
parameters: {description: User-set parameters after the change., returned: state present, type: dict}
"""

try:
    import botocore
except ImportError:
    pass  # handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def _get_group(client, name):
    try:
        groups = client.describe_db_parameter_groups(DBParameterGroupName=name)["DBParameterGroups"]
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") == "DBParameterGroupNotFound":
            return None
        raise
    return groups[0] if groups else None


def _user_parameters(client, name):
    found = {}
    for page in client.get_paginator("describe_db_parameters").paginate(DBParameterGroupName=name, Source="user"):
        for p in page.get("Parameters", []):
            if "ParameterValue" in p:
                found[p["ParameterName"]] = p["ParameterValue"]
    return found


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            family=dict(type="str"),
            description=dict(type="str", default=""),
            parameters=dict(type="dict", default={}),
            apply_method=dict(type="str", default="immediate", choices=["immediate", "pending-reboot"]),
            tags=dict(type="dict", default={}),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        required_if=[("state", "present", ["family"])],
        supports_check_mode=True,
    )
    p = module.params
    client = module.client("rds")
    changed = False
    try:
        group = _get_group(client, p["name"])
        if p["state"] == "absent":
            if group:
                changed = True
                if not module.check_mode:
                    client.delete_db_parameter_group(DBParameterGroupName=p["name"])
            module.exit_json(changed=changed)

        wanted_tags = {str(k): str(v) for k, v in p["tags"].items()}
        if group is None:
            changed = True
            if module.check_mode:
                module.exit_json(changed=True)
            group = client.create_db_parameter_group(
                DBParameterGroupName=p["name"],
                DBParameterGroupFamily=p["family"],
                Description=p["description"] or p["name"],
                Tags=[{"Key": k, "Value": v} for k, v in wanted_tags.items()],
            )["DBParameterGroup"]
        else:
            arn = group["DBParameterGroupArn"]
            current = {t["Key"]: t["Value"] for t in client.list_tags_for_resource(ResourceName=arn)["TagList"]}
            to_remove = [k for k in current if k not in wanted_tags]
            to_add = [{"Key": k, "Value": v} for k, v in wanted_tags.items() if current.get(k) != v]
            if to_remove or to_add:
                changed = True
                if not module.check_mode:
                    if to_remove:
                        client.remove_tags_from_resource(ResourceName=arn, TagKeys=to_remove)
                    if to_add:
                        client.add_tags_to_resource(ResourceName=arn, Tags=to_add)

        wanted = {str(k): str(v) for k, v in p["parameters"].items()}
        current_params = _user_parameters(client, p["name"])
        modify = [
            {"ParameterName": k, "ParameterValue": v, "ApplyMethod": p["apply_method"]}
            for k, v in wanted.items()
            if current_params.get(k) != v
        ]
        if modify:
            changed = True
            if not module.check_mode:
                for i in range(0, len(modify), 20):
                    client.modify_db_parameter_group(DBParameterGroupName=p["name"], Parameters=modify[i:i + 20])
                current_params = _user_parameters(client, p["name"])
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg=f"Could not manage DB parameter group {p['name']}")

    module.exit_json(changed=changed, arn=group.get("DBParameterGroupArn"), parameters=current_params)


if __name__ == "__main__":
    main()
