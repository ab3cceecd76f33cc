"""Verify host_baseline on the converged test hosts (testinfra)."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("test_hosts")


@pytest.fixture()
def swap_file(host):
    return f"/var/lib/swap/{host.backend.get_hostname()}.swap"


def test_systemd_is_running(host):
    out = host.run("systemctl is-system-running")
    assert out.stdout.strip() == "running", host.run("systemctl --failed --no-legend").stdout


def test_swap_file_is_active_and_private(host, swap_file):
    f = host.file(swap_file)
    assert f.exists
    assert f.user == "root" and f.mode == 0o600
    assert f.size == 128 * 1024 * 1024
    active = host.check_output("swapon --show=NAME --noheadings --raw").splitlines()
    assert swap_file in active
    fstab = host.file("/etc/fstab").content_string
    assert f"{swap_file} none swap sw 0 0" in fstab


def test_swappiness_persisted(host):
    assert "vm.swappiness=10" in host.file("/etc/sysctl.d/60-host-baseline.conf").content_string


def test_chrony_running_without_clock_control(host):
    svc = host.service("chrony")
    assert svc.is_enabled and svc.is_running
    assert "-x" in host.file("/etc/default/chrony").content_string
    # chronyd answers on its local socket.
    assert host.run("chronyc -n tracking").rc == 0
    assert "server " not in host.file("/etc/chrony/chrony.conf").content_string


def test_journal_is_persistent_and_capped(host):
    conf = host.file("/etc/systemd/journald.conf.d/60-host-baseline.conf").content_string
    assert "Storage=persistent" in conf and "SystemMaxUse=512M" in conf
    assert host.file("/var/log/journal").is_directory
    # journald writes there now, not only to /run.
    files = host.check_output("find /var/log/journal -name '*.journal' | wc -l")
    assert int(files) >= 1


def test_security_updates_timer_enabled(host):
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        svc = host.service(timer)
        assert svc.is_enabled and svc.is_running, timer
    dump = host.check_output("apt-config dump")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert "Debian-Security" in dump
    assert host.package("unattended-upgrades").is_installed


def test_extra_ca_is_trusted(host):
    bundle = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
    local = host.file("/usr/local/share/ca-certificates/molecule-test-ca.crt").content_string
    body = local.strip().splitlines()[1]
    assert body in bundle


def test_one_phase_by_its_tags(host):
    """--tags host_baseline_packages,host_baseline_journal on the converged hosts: the checks, the
    OS check and this OS's variables still run (always), then only those two phases, the shared
    apt cache refresh included, and nothing changes."""
    if not host.backend.get_hostname().endswith("-a"):
        pytest.skip("one run covers the group")
    playbook = shutil.which("ansible-playbook") or os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    run = subprocess.run(
        [playbook, "-i", os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]),
         os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "converge.yml"),
         "--tags", "host_baseline_packages,host_baseline_journal"],
        capture_output=True, text=True, timeout=900, env=dict(os.environ), check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    ran = re.findall(r"^TASK \[(?:mlflow_aws\.mlflow\.\w+ : )?(.+?)\]", out, re.M)
    for task in ("Check the values of the variables", "Check the OS is supported", "Load the variables of this OS",
                 "Look for apt package lists", "Install packages", "Configure journald storage and size cap"):
        assert task in ran, f"{task!r} did not run: {ran}"
    for task in ("Configure chrony", "Read the swap file's state", "Copy extra CA certificates into the trust store",
                 "Enable the apt timers"):
        assert task not in ran, f"{task!r} ran outside its tags"
    for name in testinfra_hosts:
        assert re.search(rf"^{re.escape(name)}\s*:\s*ok=\d+\s+changed=0\s", out, re.M), out[-1500:]
