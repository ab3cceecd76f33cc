"""Issue 11, "Inputs": every variable that ends up in a unit file, a config file, a URL or a
command is checked for its syntax before any change, with a message naming the variable.

One case or more per class of input an outside tester got through (systemd calendar specs,
memory and time sizes, host names, URLs, user names Basic auth cannot carry, CORS wildcards
while auth is on, secret strength, ports, paths, pip requirements and versions, SQL
identifiers, unit-file values, service accounts), for the host roles mlflow_server,
host_baseline and mlflow_auth, the stand-in database postgres_standin and the AWS role
aws_security_groups. Each runs the role in check mode without facts: nothing can change.
One ansible-playbook per role runs all its cases, each case an inventory host of its own
(tests/rolecheck.py). A case passes only when its host fails in the role's
tasks/validate.yml, the failure message itself (not just a task title) names the variable,
no task after validation ran for it, nothing changed, and no secret was printed by the run.

The controls give unusual but valid values of the same classes and must get past every
check (to the OS check; for mlflow_auth to the wait for the server; for postgres_standin to
looking for the installed cluster; for aws_security_groups to the check that a VPC ID is given,
which the controls leave empty so that no AWS call is ever made).
"""

import pytest
from pins import MLFLOW_VERSION
from rolecheck import role_batches

SECRETS = {
    "db": "a-db-password",
    "admin": "an-admin-password",
    "alice": "alice-password-1",
    "flask": "short-flask-key",
    "index": "index-token-s3cr3t",
    "pg": "pg-standin-password",
}

GOOD = {
    "mlflow_server": {
        "mlflow_server_db_host": "db.example.internal",
        "mlflow_server_db_password": SECRETS["db"],
        "mlflow_server_auth_admin_password": SECRETS["admin"],
    },
    "host_baseline": {},
    "mlflow_auth": {
        "mlflow_auth_admin_password": SECRETS["admin"],
        "mlflow_auth_users": [{"name": "alice", "password": SECRETS["alice"]}],
    },
    "postgres_standin": {"postgres_standin_password": SECRETS["pg"]},
    # A closed loopback port as the AWS endpoint: nothing may leave the machine even by mistake.
    "aws_security_groups": {
        "mlflow_deployment_name": "syntax",
        "mlflow_aws_region": "eu-west-1",
        "mlflow_aws_endpoint_url": "http://127.0.0.1:9",
    },
}

# Validation passed: the next thing that happens (no facts, no server on the closed port).
PASSED = {
    "mlflow_server": "mlflow_server supports Debian 12/13 and Amazon Linux 2023",
    "host_baseline": "host_baseline supports Debian 12/13 and Amazon Linux 2023",
    "mlflow_auth": "TASK [mlflow_aws.mlflow.mlflow_auth : Wait for the MLflow server]",
    "postgres_standin": "TASK [mlflow_aws.mlflow.postgres_standin : Find the PostgreSQL cluster directory]",
    "aws_security_groups": "TASK [mlflow_aws.mlflow.aws_security_groups : Require aws_security_groups_vpc_id]",
}
# The first task after validation: it must never run for a bad variable.
FIRST_TASK_AFTER_VALIDATION = {
    "mlflow_server": "Load the variables of this OS",
    "host_baseline": "Load the variables of this OS",
    "mlflow_auth": "Wait for the MLflow server",
    "postgres_standin": "Find the PostgreSQL cluster directory",
    "aws_security_groups": "Require aws_security_groups_vpc_id",
}

S, H, A = "mlflow_server", "host_baseline", "mlflow_auth"
P, G = "postgres_standin", "aws_security_groups"

# (id, role, extra vars, the variable the failure message must name)
CASES = [
    # systemd calendar expressions (OnCalendar= of the gc timer): parsed by the host's systemd.
    ("calendar-hour-25", S, {"mlflow_server_gc_on_calendar": "*-*-* 25:00:00"}, "mlflow_server_gc_on_calendar"),
    ("calendar-bad-weekday", S, {"mlflow_server_gc_on_calendar": "Mo..Fr 03:00"}, "mlflow_server_gc_on_calendar"),
    ("calendar-prose", S, {"mlflow_server_gc_on_calendar": "every night"}, "mlflow_server_gc_on_calendar"),
    ("calendar-adds-a-directive", S, {"mlflow_server_gc_on_calendar": "daily\nOnBootSec=1"}, "mlflow_server_gc_on_calendar"),
    # Sizes and time spans in units and journald.conf.
    ("memory-max-unit-MB", S, {"mlflow_server_memory_max": "512MB"}, "mlflow_server_memory_max"),
    ("memory-max-bare-bytes", S, {"mlflow_server_memory_max": "1536"}, "mlflow_server_memory_max"),
    ("memory-max-zero", S, {"mlflow_server_memory_max": "0G"}, "mlflow_server_memory_max"),
    ("memory-max-over-100-percent", S, {"mlflow_server_memory_max": "150%"}, "mlflow_server_memory_max"),
    ("memory-max-space", S, {"mlflow_server_memory_max": "2 G"}, "mlflow_server_memory_max"),
    ("journal-max-use-GB", H, {"host_baseline_journal_max_use": "1GB"}, "host_baseline_journal_max_use"),
    ("journal-max-use-newline", H, {"host_baseline_journal_max_use": "512M\n"}, "host_baseline_journal_max_use"),
    ("journal-retention-unit", H, {"host_baseline_journal_max_retention": "1 fortnight"}, "host_baseline_journal_max_retention"),
    ("journal-retention-directive", H, {"host_baseline_journal_max_retention": "1month\nStorage=none"},
     "host_baseline_journal_max_retention"),
    ("gc-older-than-words", S, {"mlflow_server_gc_older_than": "30 days"}, "mlflow_server_gc_older_than"),
    ("gc-older-than-order", S, {"mlflow_server_gc_older_than": "1h2d"}, "mlflow_server_gc_older_than"),
    ("gc-older-than-two-dots", S, {"mlflow_server_gc_older_than": "1.2.3d"}, "mlflow_server_gc_older_than"),
    # Host names (RFC 1123) and addresses.
    ("db-host-underscore", S, {"mlflow_server_db_host": "db_primary.internal"}, "mlflow_server_db_host"),
    ("db-host-with-port", S, {"mlflow_server_db_host": "db.example.internal:5432"}, "mlflow_server_db_host"),
    ("db-host-bad-ipv4", S, {"mlflow_server_db_host": "10.0.0.300"}, "mlflow_server_db_host"),
    ("db-host-leading-hyphen", S, {"mlflow_server_db_host": "-db.example.internal"}, "mlflow_server_db_host"),
    ("bind-host-with-option", S, {"mlflow_server_host": "0.0.0.0 --workers 64"}, "mlflow_server_host"),
    ("ntp-server-with-option", H, {"host_baseline_ntp_servers": ["pool.ntp.org iburst"]}, "host_baseline_ntp_servers"),
    ("ntp-pool-bad-name", H, {"host_baseline_ntp_pools": ["europe_pool.ntp.org"]}, "host_baseline_ntp_pools"),
    ("allowed-host-bad-port", S, {"mlflow_server_allowed_hosts": ["mlflow.example.com:70000"]}, "mlflow_server_allowed_hosts"),
    ("allowed-host-comma", S, {"mlflow_server_allowed_hosts": ["a.example.com,b.example.com"]}, "mlflow_server_allowed_hosts"),
    # URLs: scheme, host, port.
    ("s3-endpoint-no-scheme", S, {"mlflow_server_s3_endpoint_url": "moto.test:5000"}, "mlflow_server_s3_endpoint_url"),
    ("s3-endpoint-no-host", S, {"mlflow_server_s3_endpoint_url": "http://:5000"}, "mlflow_server_s3_endpoint_url"),
    ("s3-endpoint-port-zero", S, {"mlflow_server_s3_endpoint_url": "http://moto.test:0"}, "mlflow_server_s3_endpoint_url"),
    ("ca-bundle-over-http", S, {"mlflow_server_db_sslrootcert": "/etc/mlflow/db-ca.pem",
                                "mlflow_server_db_sslrootcert_url": "http://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"},
     "mlflow_server_db_sslrootcert_url"),
    ("pip-index-ftp", S, {"mlflow_server_pip_index_url": f"ftp://ci:{SECRETS['index']}@pypi.example.com/simple"},
     "mlflow_server_pip_index_url"),
    ("auth-api-url-space", A, {"mlflow_auth_api_url": "http://127.0.0.1:5000 /x"}, "mlflow_auth_api_url"),
    ("auth-api-url-credentials", A, {"mlflow_auth_api_url": f"http://admin:{SECRETS['admin']}@127.0.0.1:5000"},
     "mlflow_auth_api_url"),
    ("auth-api-url-bad-port", A, {"mlflow_auth_api_url": "http://127.0.0.1:99999"}, "mlflow_auth_api_url"),
    # User names Basic auth cannot carry ("user:password").
    ("admin-name-colon", S, {"mlflow_server_auth_admin_username": "ad:min"}, "mlflow_server_auth_admin_username"),
    ("admin-name-trailing-space", S, {"mlflow_server_auth_admin_username": "admin "}, "mlflow_server_auth_admin_username"),
    ("admin-name-control-char", S, {"mlflow_server_auth_admin_username": "ad\tmin"}, "mlflow_server_auth_admin_username"),
    ("auth-admin-name-colon", A, {"mlflow_auth_admin_username": "root:x"}, "mlflow_auth_admin_username"),
    ("auth-user-name-colon", A, {"mlflow_auth_users": [{"name": "data:science", "password": SECRETS["alice"]}]},
     "mlflow_auth_users"),
    ("auth-user-name-leading-space", A, {"mlflow_auth_users": [{"name": " alice", "password": SECRETS["alice"]}]},
     "mlflow_auth_users"),
    # CORS: every origin while auth is on.
    ("cors-star-with-auth", S, {"mlflow_server_cors_allowed_origins": ["*"]}, "mlflow_server_cors_allowed_origins"),
    ("cors-any-https-with-auth", S, {"mlflow_server_cors_allowed_origins": ["https://mlflow.example.com", "https://*"]},
     "mlflow_server_cors_allowed_origins"),
    ("cors-origin-with-path", S, {"mlflow_server_cors_allowed_origins": ["https://mlflow.example.com/ui"]},
     "mlflow_server_cors_allowed_origins"),
    # Secret strength (never shown in the message).
    ("flask-secret-key-short", S, {"mlflow_server_flask_secret_key": SECRETS["flask"]}, "mlflow_server_flask_secret_key"),
    ("admin-password-11", S, {"mlflow_server_auth_admin_password": "elevenchars"}, "mlflow_server_auth_admin_password"),
    # Paths on the host (units, URIs, commands, fstab).
    ("install-dir-relative", S, {"mlflow_server_install_dir": "opt/mlflow"}, "mlflow_server_install_dir"),
    ("data-dir-space", S, {"mlflow_server_data_dir": "/var/lib/ml flow"}, "mlflow_server_data_dir"),
    ("config-dir-dotdot", S, {"mlflow_server_config_dir": "/etc/mlflow/../shadow"}, "mlflow_server_config_dir"),
    ("backup-dir-root", S, {"mlflow_server_db_backup_dir": "/"}, "mlflow_server_db_backup_dir"),
    ("sqlite-path-specifier", S, {"mlflow_server_backend": "sqlite", "mlflow_server_sqlite_path": "/var/lib/mlflow/%H.db"},
     "mlflow_server_sqlite_path"),
    ("sslrootcert-query-char", S, {"mlflow_server_db_sslrootcert": "/etc/mlflow/ca.pem&sslmode=disable"},
     "mlflow_server_db_sslrootcert"),
    ("sslrootcert-src-missing", S, {"mlflow_server_db_sslrootcert": "/etc/mlflow/ca.pem",
                                    "mlflow_server_db_sslrootcert_src": "/nonexistent/ca.pem"},
     "mlflow_server_db_sslrootcert_src"),
    ("artifacts-space", S, {"mlflow_server_artifacts_destination": "/var/lib/mlflow/my artifacts"},
     "mlflow_server_artifacts_destination"),
    ("artifacts-s3-prefix-space", S, {"mlflow_server_artifacts_destination": "s3://bucket/a b"},
     "mlflow_server_artifacts_destination"),
    ("backup-s3-uppercase-bucket", S, {"mlflow_server_db_backup_s3_uri": "s3://My_Backups/db"}, "mlflow_server_db_backup_s3_uri"),
    ("swap-file-relative", H, {"host_baseline_swap_file": "swapfile"}, "host_baseline_swap_file"),
    ("swap-file-space", H, {"host_baseline_swap_file": "/swap file"}, "host_baseline_swap_file"),
    ("ca-certificate-missing", H, {"host_baseline_extra_ca_certificates": ["/nonexistent/corp-ca.pem"]},
     "host_baseline_extra_ca_certificates"),
    ("auth-ca-path-relative", A, {"mlflow_auth_ca_path": "ca.pem"}, "mlflow_auth_ca_path"),
    # Versions and pip requirements (PEP 440 / PEP 508), pip options.
    ("version-trailing-newline", S, {"mlflow_server_version": MLFLOW_VERSION + "\n"}, "mlflow_server_version"),
    ("pip-extra-is-an-option", S, {"mlflow_server_pip_packages_extra": ["--index-url=http://evil.example"]},
     "mlflow_server_pip_packages_extra"),
    ("pip-extra-bad-version", S, {"mlflow_server_pip_packages_extra": ["psycopg2-binary==latest"]},
     "mlflow_server_pip_packages_extra"),
    ("pip-extra-url", S, {"mlflow_server_pip_packages_extra": ["pkg @ https://example.com/pkg.whl"]},
     "mlflow_server_pip_packages_extra"),
    ("pip-args-not-an-option", S, {"mlflow_server_pip_extra_args": "no-index"}, "mlflow_server_pip_extra_args"),
    ("pip-args-newline", S, {"mlflow_server_pip_extra_args": "--no-index\n--find-links /x"}, "mlflow_server_pip_extra_args"),
    # SQL identifiers: database and role names.
    ("db-name-hyphen", S, {"mlflow_server_db_name": "mlflow-db"}, "mlflow_server_db_name"),
    ("auth-db-name-too-long", S, {"mlflow_server_auth_db_name": "a" * 64}, "mlflow_server_auth_db_name"),
    ("db-user-injection", S, {"mlflow_server_db_user": "mlflow'; DROP ROLE x; --"}, "mlflow_server_db_user"),
    ("db-admin-user-hyphen", S, {"mlflow_server_db_admin_user": "rds-admin"}, "mlflow_server_db_admin_user"),
    # Service account and unit names.
    ("service-user-root", S, {"mlflow_server_user": "root"}, "mlflow_server_user"),
    ("service-user-space", S, {"mlflow_server_user": "ml flow"}, "mlflow_server_user"),
    ("service-group-upper", S, {"mlflow_server_group": "MLflow"}, "mlflow_server_group"),
    ("service-name-suffix", S, {"mlflow_server_service_name": "mlflow.service"}, "mlflow_server_service_name"),
    ("service-name-slash", S, {"mlflow_server_service_name": "../mlflow"}, "mlflow_server_service_name"),
    # Values written into Environment= lines of the unit.
    ("environment-quote", S, {"mlflow_server_environment": {"NO_PROXY": 'a"b'}}, "mlflow_server_environment"),
    ("environment-specifier", S, {"mlflow_server_environment": {"RATIO": "50%"}}, "mlflow_server_environment"),
    # Counts and timeouts written into the unit.
    ("limit-nofile-zero", S, {"mlflow_server_limit_nofile": 0}, "mlflow_server_limit_nofile"),
    ("health-timeout-negative", S, {"mlflow_server_health_timeout": -5}, "mlflow_server_health_timeout"),
    ("auth-cache-ttl-negative", S, {"mlflow_server_auth_cache_ttl_seconds": -1}, "mlflow_server_auth_cache_ttl_seconds"),
    ("auth-cache-ttl-a-day", S, {"mlflow_server_auth_cache_ttl_seconds": 86400}, "mlflow_server_auth_cache_ttl_seconds"),
    # The stand-in database: certificate names, pg_hba.conf, SQL names, its password, the PKI path.
    ("standin-name-underscore", P, {"postgres_standin_server_names": ["db_primary.test"]}, "postgres_standin_server_names"),
    ("standin-name-ip", P, {"postgres_standin_server_names": ["172.30.254.11"]}, "postgres_standin_server_names"),
    ("standin-name-with-port", P, {"postgres_standin_server_names": ["db.test:5432"]}, "postgres_standin_server_names"),
    ("standin-name-newline", P, {"postgres_standin_server_names": ["db.test\nDNS:evil.test"]}, "postgres_standin_server_names"),
    ("standin-names-empty", P, {"postgres_standin_server_names": []}, "postgres_standin_server_names"),
    ("standin-pki-relative", P, {"postgres_standin_pki_dir": ".demo/pki"}, "postgres_standin_pki_dir"),
    ("standin-pki-dotdot", P, {"postgres_standin_pki_dir": "/tmp/pki/../../etc"}, "postgres_standin_pki_dir"),
    ("standin-pki-root", P, {"postgres_standin_pki_dir": "/"}, "postgres_standin_pki_dir"),
    ("standin-user-postgres", P, {"postgres_standin_user": "postgres"}, "postgres_standin_user"),
    ("standin-user-reserved", P, {"postgres_standin_user": "pg_monitor"}, "postgres_standin_user"),
    ("standin-user-injection", P, {"postgres_standin_user": "mlflow\" WITH SUPERUSER --"}, "postgres_standin_user"),
    ("standin-password-short", P, {"postgres_standin_password": "short7!"}, "postgres_standin_password"),
    ("standin-password-newline", P, {"postgres_standin_password": SECRETS["pg"] + "\nx"}, "postgres_standin_password"),
    ("standin-database-hyphen", P, {"postgres_standin_databases": ["mlflow-db"]}, "postgres_standin_databases"),
    ("standin-database-template", P, {"postgres_standin_databases": ["template1"]}, "postgres_standin_databases"),
    ("standin-database-twice", P, {"postgres_standin_databases": ["mlflow", "mlflow"]}, "postgres_standin_databases"),
    ("standin-cidr-host-bits", P, {"postgres_standin_allowed_cidr": "172.30.254.11/24"}, "postgres_standin_allowed_cidr"),
    ("standin-cidr-two-fields", P, {"postgres_standin_allowed_cidr": "0.0.0.0/0 trust"}, "postgres_standin_allowed_cidr"),
    ("standin-cidr-hostname", P, {"postgres_standin_allowed_cidr": "all"}, "postgres_standin_allowed_cidr"),
    # Security groups: the rules' CIDRs and ports, the VPC ID.
    ("sg-vpc-id-newline", G, {"aws_security_groups_vpc_id": "vpc-0123abcd\n"}, "aws_security_groups_vpc_id"),
    ("sg-vpc-id-subnet", G, {"aws_security_groups_vpc_id": "subnet-0123abcd"}, "aws_security_groups_vpc_id"),
    ("sg-https-cidr-trailing-space", G, {"aws_security_groups_https_cidrs": ["203.0.113.0/24 "]}, "aws_security_groups_https_cidrs"),
    ("sg-https-cidr-no-prefix", G, {"aws_security_groups_https_cidrs": ["203.0.113.7"]}, "aws_security_groups_https_cidrs"),
    ("sg-https-cidr-twice", G, {"aws_security_groups_https_cidrs": ["203.0.113.0/24", "203.0.113.0/24"]},
     "aws_security_groups_https_cidrs"),
    ("sg-ssh-cidr-bad-v6", G, {"aws_security_groups_ssh_enabled": True, "aws_security_groups_ssh_cidrs": ["2001:db8::1/32"]},
     "aws_security_groups_ssh_cidrs"),
    ("sg-ssh-enabled-without-cidrs", G, {"aws_security_groups_ssh_enabled": True}, "aws_security_groups_ssh_cidrs"),
    ("sg-https-port-80-with-redirect", G, {"aws_security_groups_https_port": 80}, "aws_security_groups_https_port"),
    ("sg-https-port-22-with-ssh", G, {"aws_security_groups_https_port": 22, "aws_security_groups_ssh_enabled": True,
                                      "aws_security_groups_ssh_cidrs": ["198.51.100.0/24"]}, "aws_security_groups_https_port"),
    ("sg-https-port-zero", G, {"aws_security_groups_https_port": 0}, "aws_security_groups_https_port"),
    ("sg-db-port-below-rds", G, {"aws_security_groups_db_port": 1000}, "aws_security_groups_db_port"),
    ("sg-too-many-rules", G, {"aws_security_groups_https_cidrs": [f"10.{i}.0.0/16" for i in range(31)]},
     "aws_security_groups_https_cidrs"),
]


@pytest.mark.parametrize("case,role,variable", [(c[0], c[1], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_syntax_fails_in_validation(hosts, case, role, variable):
    host = hosts[case]
    assert host.failed, host
    errors = host.failures()
    assert errors, f"no failure message:\n{host}"
    message, origin = errors[0]
    assert variable in message, f"the failure does not name {variable}:\n{message}\n{host}"
    assert f"/roles/{role}/tasks/validate.yml:" in origin, f"failed outside validation, at {origin}:\n{host}"
    assert not host.ran(FIRST_TASK_AFTER_VALIDATION[role]), f"tasks after validation ran:\n{host}"
    assert not host.changed, host
    leaked = [name for name, secret in SECRETS.items() if secret in host.batch.output]
    assert not leaked, f"secrets printed: {leaked}"


# Unusual but valid values of each class: they must pass every check.
CONTROLS = [
    ("server-calendars-sizes-names", S, {
        "mlflow_server_gc_on_calendar": "Mon..Fri *-*-* 22:00:00 Europe/Berlin",
        "mlflow_server_memory_max": "1.5G",
        "mlflow_server_gc_older_than": "2d8h5m20s",
        "mlflow_server_host": "::",
        "mlflow_server_db_host": "mlflow-prod.c9akciq32.eu-west-1.rds.amazonaws.com",
        "mlflow_server_allowed_hosts": ["mlflow.example.com", "*.internal.example.com", "[::1]:5000", "10.0.0.5:5000"],
        "mlflow_server_cors_allowed_origins": ["https://mlflow.example.com", "https://*.example.com", "http://localhost:*"],
        "mlflow_server_auth_admin_username": "ops admin",
        "mlflow_server_flask_secret_key": "k" * 32,
    }),
    ("server-urls-paths-pip", S, {
        "mlflow_server_gc_on_calendar": "daily",
        "mlflow_server_memory_max": "80%",
        "mlflow_server_s3_endpoint_url": "http://moto.test:5000",
        "mlflow_server_pip_index_url": f"https://ci:{SECRETS['index']}@pypi.example.com/simple/",
        "mlflow_server_db_sslrootcert": "/etc/mlflow/db-ca.pem",
        "mlflow_server_db_sslrootcert_url": "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem",
        "mlflow_server_artifacts_destination": "s3://mlflow-artifacts/team-a/runs",
        "mlflow_server_db_backup_s3_uri": "s3://mlflow-backups/db",
        "mlflow_server_pip_packages_extra": ["psycopg2-binary==2.9.10", "uvicorn[standard]>=0.30,<1", "gunicorn"],
        "mlflow_server_pip_extra_args": "--no-index --find-links /mnt/wheels/py311",
        "mlflow_server_environment": {"AWS_DEFAULT_REGION": "eu-west-1", "NO_PROXY": "169.254.169.254,.internal"},
        "mlflow_server_service_name": "mlflow-prod",
        "mlflow_server_db_name": "mlflow_prod",
        "mlflow_server_db_user": "mlflow_app",
    }),
    ("server-wildcard-cors-without-auth", S, {
        "mlflow_server_auth_enabled": False,
        "mlflow_server_cors_allowed_origins": ["*"],
        "mlflow_server_memory_max": "infinity",
    }),
    # What group_vars/all/wiring.yml gives the server in the e2e scenario and against AWS, and the
    # front_door scenario's values (scenarios these tests cannot afford to run).
    ("server-e2e-wiring", S, {
        "mlflow_server_db_host": "db.e2e.test",
        "mlflow_server_db_port": 5432,
        "mlflow_server_db_name": "mlflow",
        "mlflow_server_db_user": "mlflow",
        "mlflow_server_db_server_version": "17",
        "mlflow_server_db_sslrootcert": "/etc/mlflow/db-ca.pem",
        "mlflow_server_db_sslrootcert_src": __file__,
        "mlflow_server_artifacts_destination": "s3://e2e-mlflow-artifacts/artifacts",
        "mlflow_server_db_backup_s3_uri": "s3://e2e-mlflow-artifacts/db-backups",
        "mlflow_server_s3_endpoint_url": "http://172.30.254.10:5000",
        "mlflow_server_environment": {"AWS_DEFAULT_REGION": "eu-west-1"},
        "mlflow_server_secret_environment": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
        "mlflow_server_allowed_hosts": ["172.30.254.20", "localhost", "127.0.0.1", "localhost:5000", "127.0.0.1:5000"],
        "mlflow_server_cors_allowed_origins": ["https://172.30.254.20"],
    }),
    ("server-front-door", S, {
        "mlflow_server_backend": "sqlite",
        "mlflow_server_artifacts_destination": "/var/lib/mlflow/artifacts",
        "mlflow_server_workers": 2,
        "mlflow_server_allowed_hosts": ["mlflow.front-door.test", "172.18.0.3", "localhost", "127.0.0.1", "localhost:5000",
                                        "127.0.0.1:5000"],
        "mlflow_server_cors_allowed_origins": ["https://mlflow.front-door.test", "https://172.18.0.3"],
    }),
    ("baseline-sizes-names", H, {
        "host_baseline_journal_max_use": "1.5G",
        "host_baseline_journal_max_retention": "1d 12h",
        "host_baseline_ntp_servers": ["169.254.169.123", "fd00:ec2::123", "time.example.com"],
        "host_baseline_ntp_pools": ["2.debian.pool.ntp.org"],
        "host_baseline_swap_file": "/var/lib/swap/host-a.swap",
    }),
    ("standin-e2e-and-scenario-values", P, {
        "postgres_standin_server_names": ["db.e2e.test", "postgres.test", "localhost"],
        "postgres_standin_pki_dir": "/tmp/molecule/e2e pki/pg-pki",
        "postgres_standin_user": "mlflow_admin",
        "postgres_standin_password": 'Pg-s3cret%w1th"quote\'and#hash ' + SECRETS["pg"],
        "postgres_standin_databases": ["mlflow", "mlflow_auth"],
        "postgres_standin_allowed_cidr": "fd00:172:30::/48",
    }),
    ("sg-mixed-families-at-the-quota", G, {
        "aws_security_groups_vpc_id": "",
        "aws_security_groups_https_cidrs": [f"10.{i}.0.0/16" for i in range(30)] + ["2001:db8::/32"],
        "aws_security_groups_https_port": 8443,
        "aws_security_groups_ssh_enabled": True,
        "aws_security_groups_ssh_cidrs": ["2001:db8:1::/48"],
    }),
    ("sg-https-on-80-without-redirect", G, {
        "aws_security_groups_http_redirect": False,
        "aws_security_groups_https_port": 80,
        "aws_security_groups_https_cidrs": ["0.0.0.0/0"],
        "aws_security_groups_allow_from_anywhere": True,
    }),
    ("auth-names-urls", A, {
        "mlflow_auth_api_url": "http://127.0.0.1:9",
        "mlflow_auth_wait_timeout": 1,
        "mlflow_auth_ca_path": "/etc/mlflow/front-door-ca.pem",
        "mlflow_auth_users": [{"name": "alice@example.com", "password": SECRETS["alice"]},
                              {"name": "Bob Smith", "password": SECRETS["alice"]}],
    }),
]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, env_with_venv):
    """Every case's and control's host, those of one role in one run."""
    cases = {case: (role, {**GOOD[role], **extra}) for case, role, extra, *_ in CASES + CONTROLS}
    assert len(cases) == len(CASES) + len(CONTROLS), "two cases have the same id"
    return role_batches(tmp_path_factory, env_with_venv, cases)


@pytest.mark.parametrize("case,role", [c[:2] for c in CONTROLS], ids=[c[0] for c in CONTROLS])
def test_valid_values_pass_validation(hosts, case, role):
    host = hosts[case]
    assert PASSED[role] in host.text(), host
    leaked = [name for name, secret in SECRETS.items() if secret in host.batch.output]
    assert not leaked, f"secrets printed: {leaked}"
