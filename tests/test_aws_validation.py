"""Bad AWS inputs fail before any AWS call, with a message naming the variable.

Runs playbooks/provision.yml with NO emulator: the endpoint is a closed loopback port and
the credentials are dummies, so an AWS call would fail with a connection error instead.
Each case must fail in the validation play (the provisioning play never starts for it).
One run of the playbook holds all the cases and the controls, each an inventory host of its
own (tests/rolecheck.py: the copy of provision.yml it runs targets every host instead of
localhost), and each test checks its own host's results.
"""

import socket
import threading
from pathlib import Path

import pytest
from rolecheck import Batches, closed_port, offline_aws_env, playbook_variables, run_playbook_batch, run_role_check

ROOT = Path(__file__).resolve().parent.parent
PROVISION_PLAY = "PLAY [Provision the MLflow deployment on AWS]"


CASES = {
    "invalid_cidr": ({"aws_security_groups_https_cidrs": ["10.0.0.300/24"]}, "aws_security_groups_https_cidrs"),
    "cidr_with_host_bits": ({"aws_security_groups_ssh_enabled": True, "aws_security_groups_ssh_cidrs": ["10.1.2.3/16"]},
                            "aws_security_groups_ssh_cidrs"),
    "invalid_vpc_cidr": ({"aws_network_mode": "create", "aws_network_vpc_cidr": "10.0.0.0/33"}, "aws_network_vpc_cidr"),
    "subnet_outside_vpc": ({"aws_network_mode": "create", "aws_network_public_subnet_cidrs": ["192.168.0.0/24"]},
                           "aws_network_public_subnet_cidrs"),
    "bucket_name_uppercase": ({"aws_artifact_bucket_name": "My_Artifacts"}, "aws_artifact_bucket_name"),
    "bucket_name_ip": ({"aws_artifact_bucket_name": "192.168.1.10"}, "aws_artifact_bucket_name"),
    "bucket_name_too_short": ({"aws_artifact_bucket_name": "ab"}, "aws_artifact_bucket_name"),
    "engine_major_with_minor": ({"aws_rds_postgres_engine_major_version": "17.2"}, "aws_rds_postgres_engine_major_version"),
    "engine_major_too_old": ({"aws_rds_postgres_engine_major_version": "9"}, "aws_rds_postgres_engine_major_version"),
    "engine_major_float": ({"aws_rds_postgres_engine_major_version": 17.2}, "aws_rds_postgres_engine_major_version"),
    "allow_major_upgrade_not_bool": ({"aws_rds_postgres_allow_major_version_upgrade": "maybe"},
                                     "aws_rds_postgres_allow_major_version_upgrade"),
    "backup_retention_zero": ({"aws_rds_postgres_backup_retention_days": 0}, "aws_rds_postgres_backup_retention_days"),
    "world_https_without_opt_in": ({"aws_security_groups_https_cidrs": ["0.0.0.0/0"]}, "aws_security_groups_allow_from_anywhere"),
    "world_ssh_without_opt_in": ({"aws_security_groups_ssh_enabled": True, "aws_security_groups_ssh_cidrs": ["::/0"]},
                                 "aws_security_groups_ssh_cidrs"),
    # The collection-wide inputs every AWS role reads (roles/_common, its main entry point, a dependency of each).
    "region_format": ({"mlflow_aws_region": "Europe (Ireland)"}, "mlflow_aws_region must be"),
    "region_typo": ({"mlflow_aws_region": "euwest1"}, "mlflow_aws_region must be"),
    "region_empty": ({"mlflow_aws_region": ""}, "mlflow_aws_region must be"),
    "deployment_name": ({"mlflow_deployment_name": "Prod_1"}, "mlflow_deployment_name must be"),
    "deployment_name_trailing_hyphen": ({"mlflow_deployment_name": "prod-"}, "mlflow_deployment_name must be"),
    "endpoint_url_scheme": ({"mlflow_aws_endpoint_url": "localhost:5000"}, "mlflow_aws_endpoint_url must be"),
    "endpoint_url_ftp": ({"mlflow_aws_endpoint_url": "ftp://127.0.0.1"}, "mlflow_aws_endpoint_url must be"),
    "tags_reserved_prefix": ({"mlflow_aws_tags": {"aws:owner": "me"}}, "mlflow_aws_tags must"),
    "tags_bad_value": ({"mlflow_aws_tags": {"team": "a<b>"}}, "mlflow_aws_tags must"),
    "tags_not_a_dict": ({"mlflow_aws_tags": "team=ml"}, "mlflow_aws_tags must"),
    "network_mode_choice": ({"aws_network_mode": "magic"}, "aws_network_mode"),
    # Syntax (issue 11, Inputs): the message itself, not a task title, names the variable; a trailing
    # newline no longer slips through a pattern's end ($ matched before it, \Z does not).
    "bucket_name_trailing_newline": ({"aws_artifact_bucket_name": "mlflow-artifacts\n"},
                                     "aws_artifact_bucket_name is not a name S3 accepts"),
    "instance_type_without_size": ({"aws_ec2_host_instance_type": "t3"}, "aws_ec2_host_instance_type must be"),
    "instance_type_trailing_newline": ({"aws_ec2_host_instance_type": "t3.small\n"}, "aws_ec2_host_instance_type must be"),
    "ami_ssm_parameter_space": ({"aws_ec2_host_ami_ssm_parameter": "/aws/service/ami amazon-linux"},
                                "aws_ec2_host_ami_ssm_parameter an SSM parameter path"),
    "ec2_name_tag_chars": ({"aws_ec2_host_name": "mlflow<server>"}, "aws_ec2_host_name (the Name tag"),
    "ec2_key_name_newline": ({"aws_ec2_host_key_name": "ops\nkey"}, "aws_ec2_host_key_name (empty or an EC2 key pair name"),
    "admin_user_trailing_newline": ({"aws_ec2_host_admin_user": "ec2-user\n"}, "aws_ec2_host_admin_user must be"),
    "iam_role_name_trailing_newline": ({"aws_iam_instance_role_name": "mlflow-server\n"}, "aws_iam_instance_role_name must be"),
    "kms_arn_trailing_newline": ({"aws_iam_instance_role_kms_key_arns": ["arn:aws:kms:eu-west-1:123456789012:key/abc\n"]},
                                 "aws_iam_instance_role_kms_key_arns must hold"),
    "rds_instance_class_without_prefix": ({"aws_rds_postgres_instance_class": "t4g.micro"}, "aws_rds_postgres_instance_class must be"),
    "rds_instance_class_ec2_style": ({"aws_rds_postgres_instance_class": "db.micro"}, "aws_rds_postgres_instance_class must be"),
    "rds_instance_class_trailing_newline": ({"aws_rds_postgres_instance_class": "db.t4g.micro\n"},
                                            "aws_rds_postgres_instance_class must be"),
    "engine_major_trailing_newline": ({"aws_rds_postgres_engine_major_version": "17\n"},
                                      "aws_rds_postgres_engine_major_version must be"),
    "vpc_id_trailing_newline": ({"aws_network_mode": "existing", "aws_network_vpc_id": "vpc-0123456789abcdef0\n",
                                 "aws_network_public_subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]},
                                "aws_network_vpc_id must be"),
}


# Controls: valid values, which pass validation; the run only fails at the first AWS call.
CONTROLS = {
    # A major version, as a string or a number.
    **{f"engine_major_{major!r}": {"aws_rds_postgres_engine_major_version": major, "aws_rds_postgres_allow_major_version_upgrade": True}
       for major in ["17", 17, "18"]},
    # Valid values of the checked syntaxes.
    "unusual_valid_ec2_inputs": {"aws_ec2_host_instance_type": "m7i-flex.large", "aws_ec2_host_name": "MLflow server: prod",
                                 "aws_rds_postgres_instance_class": "db.r6gd.2xlarge",
                                 "aws_ec2_host_key_name": "ops key 2026",
                                 "aws_ec2_host_ami_ssm_parameter": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-arm64"},
    # The opt-in works.
    "world_rule_with_opt_in": {"aws_security_groups_https_cidrs": ["0.0.0.0/0"], "aws_security_groups_allow_from_anywhere": True},
}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """Every case's and control's host, in one run of provision.yml (a closed port as the endpoint)."""
    port = closed_port()
    cases = {case: ("provision", playbook_variables(extra, port)) for case, (extra, _) in CASES.items()}
    cases |= {case: ("provision", playbook_variables(extra, port)) for case, extra in CONTROLS.items()}
    assert len(cases) == len(CASES) + len(CONTROLS), "two cases have the same id"
    aws_roles = sorted(p.name for p in (ROOT / "roles").glob("aws_*"))
    return Batches(tmp_path_factory, cases, lambda workdir, _, members: run_playbook_batch(
        workdir, offline_aws_env(), "playbooks/provision.yml", members, roles=aws_roles,
        task_files=[ROOT / "playbooks" / "tasks" / "validate_connection.yml"]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_variable_fails_before_any_aws_call(hosts, case):
    _, variable = CASES[case]
    host = hosts[case]
    out = host.text()
    assert host.failed, host
    assert variable in out, f"failure does not name {variable}:\n{host}"
    assert PROVISION_PLAY not in out, f"validation let {case} through to the AWS play:\n{host}"
    assert "Could not connect to the endpoint" not in out, host


@pytest.mark.parametrize("major", ["17", 17, "18"])
def test_engine_major_version_passes_validation(hosts, major):
    """A major version, as a string or a number, passes validation: the run only fails at the first AWS call."""
    host = hosts[f"engine_major_{major!r}"]
    assert host.failed
    assert PROVISION_PLAY in host.text(), host


def test_unusual_valid_ec2_inputs_pass_validation(hosts):
    """Valid values of the checked syntaxes pass: the run only fails at the first AWS call."""
    host = hosts["unusual_valid_ec2_inputs"]
    assert host.failed
    assert PROVISION_PLAY in host.text(), host


def test_world_rule_with_opt_in_passes_validation(hosts):
    """The opt-in works: validation passes and the run only fails at the first AWS call."""
    host = hosts["world_rule_with_opt_in"]
    assert host.failed
    assert PROVISION_PLAY in host.text(), host


def test_role_alone_gets_the_collection_wide_defaults(tmp_path):
    """Outside this repository's playbooks and group_vars, an AWS role still has the
    collection-wide inputs: _common (a dependency) brings their defaults and checks them.
    A bad region fails in _common's check; a good one passes validation (and the role's own
    argument_specs) and the role's first AWS call goes to mlflow_aws_endpoint_url: a loopback
    listener that accepts the connection and closes it."""
    env = offline_aws_env()
    bad = run_role_check(tmp_path, env, "aws_network", {"mlflow_aws_region": "Ireland"})
    assert bad.returncode != 0 and "mlflow_aws_region must be" in bad.stdout + bad.stderr, (bad.stdout + bad.stderr)[-3000:]

    accepted = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(120)

        def accept():
            try:
                while True:
                    conn, _ = listener.accept()
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    accepted.append(head)
                    conn.close()
            except OSError:
                pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        good = run_role_check(tmp_path, env, "aws_network", {"mlflow_aws_region": "eu-west-1", "mlflow_aws_endpoint_url": endpoint})
    out = good.stdout + good.stderr
    assert "mlflow_aws.mlflow._common : Check the collection-wide inputs" in out, out[-3000:]
    assert "Validating arguments against arg spec 'main' - Network" in out, out[-3000:]
    assert good.returncode != 0 and "undefined" not in out, out[-3000:]
    # The request's signature names the region and service module_defaults gave it.
    assert any(b"/eu-west-1/ec2/aws4_request" in req for req in accepted), (accepted, out[-3000:])
