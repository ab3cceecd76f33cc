"""Create or destroy a docker scenario's containers and networks with the docker CLI.

    containers.py create|destroy < platforms.json

molecule/shared/create.yml and destroy.yml (set for every scenario in .config/molecule/config.yml)
pass molecule.yml's `platforms`, as molecule resolved them, on stdin. This does what the docker
driver's own playbooks do for the platform keys our scenarios use, in one process and in
parallel: those playbooks took 45-65 s to create 2-4 containers and 20-25 s to remove them on
the 2-core test machine (each a loop of Ansible tasks, most of them for keys we do not use).

The keys: name, hostname, image (local, pre_build_image), command (split as a shell would,
like the driver's command_handling=compatibility; the driver's sleep loop when none), user,
env, cgroupns_mode, capabilities, security_opts, volumes, tmpfs, networks (one per platform:
name, ipv4_address, aliases) and docker_networks (name, ipam_config: subnet, gateway). Any
other key, or a second network, is refused, so a platform that needs one fails here instead
of starting without it.
Containers and networks carry the label owner=molecule, as the driver's do (`molecule reset`
finds them). destroy removes a container with its anonymous volumes (the systemd hosts'
swap volume), then the scenario's networks.
"""

import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

KNOWN = {"name", "hostname", "image", "pre_build_image", "command", "user", "env", "cgroupns_mode",
         "capabilities", "security_opts", "volumes", "tmpfs", "networks", "docker_networks", "groups",
         "keep_volumes", "children"}
LABEL = "owner=molecule"


def docker(*args, check=True):
    res = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        sys.exit(f"docker {' '.join(args[:3])} ...: {res.stderr.strip() or res.stdout.strip()}")
    return res


def networks(platforms):
    """{name: ipam_config} for every network a platform names or declares, in order."""
    found = {}
    for p in platforms:
        for net in p.get("docker_networks") or []:
            found[net["name"]] = net.get("ipam_config") or []
        for net in p.get("networks") or []:
            found.setdefault(net["name"], [])
    return found


def run_args(p):
    args = ["run", "--detach", "--name", p["name"], "--hostname", p.get("hostname", p["name"]),
            "--label", LABEL, "--log-driver", "json-file"]
    if p.get("user"):
        args += ["--user", str(p["user"])]
    for key, value in (p.get("env") or {}).items():
        args += ["--env", f"{key}={value}"]
    if p.get("cgroupns_mode"):
        args += ["--cgroupns", p["cgroupns_mode"]]
    args += [a for cap in p.get("capabilities") or [] for a in ("--cap-add", cap)]
    args += [a for opt in p.get("security_opts") or [] for a in ("--security-opt", opt)]
    args += [a for vol in p.get("volumes") or [] for a in ("--volume", vol)]
    args += [a for fs in p.get("tmpfs") or [] for a in ("--tmpfs", fs)]
    for net in p.get("networks") or []:  # at most one: create() refuses more
        args += ["--network", net["name"]] + (["--ip", net["ipv4_address"]] if net.get("ipv4_address") else [])
        args += [a for alias in net.get("aliases") or [] for a in ("--network-alias", alias)]
    args.append(p["image"])
    # The driver's default command when a platform names none.
    return args + shlex.split(p.get("command") or 'bash -c "while true; do sleep 10000; done"')


def create_one(p):
    if docker("container", "inspect", p["name"], check=False).returncode == 0:
        docker("start", p["name"])  # the driver's recreate=false: an existing one is kept
        return f"{p['name']}: existed, started"
    docker(*run_args(p))
    return f"{p['name']}: created"


def create(platforms):
    unknown = sorted({f"{p['name']}.{k}" for p in platforms for k in p if k not in KNOWN})
    if unknown:
        sys.exit(f"containers.py does not handle these platform keys: {', '.join(unknown)}")
    several = [p["name"] for p in platforms if len(p.get("networks") or []) > 1]
    if several:
        sys.exit(f"containers.py attaches one network per container; more in: {', '.join(several)}")
    done = []
    for name, ipam in networks(platforms).items():
        if docker("network", "inspect", name, check=False).returncode == 0:
            continue
        args = ["network", "create", "--label", LABEL]
        for block in ipam:
            args += [a for k in ("subnet", "gateway") if block.get(k) for a in (f"--{k}", block[k])]
        docker(*args, name)
        done.append(f"network {name}: created")
    with ThreadPoolExecutor(len(platforms) or 1) as pool:
        done += list(pool.map(create_one, platforms))
    return done


def destroy(platforms):
    def remove(p):
        res = docker("rm", "--force", "--volumes", p["name"], check=False)
        if res.returncode != 0 and "No such container" not in res.stderr:
            sys.exit(f"docker rm {p['name']}: {res.stderr.strip()}")
        return f"{p['name']}: removed" if res.stdout.strip() else None  # --force: silent when absent

    with ThreadPoolExecutor(len(platforms) or 1) as pool:
        done = [line for line in pool.map(remove, platforms) if line]
    for name in networks(platforms):
        if docker("network", "rm", name, check=False).returncode == 0:
            done.append(f"network {name}: removed")
    return done


def main():
    action = sys.argv[1] if len(sys.argv) == 2 else ""
    if action not in ("create", "destroy"):
        sys.exit(__doc__)
    platforms = json.load(sys.stdin)
    for line in create(platforms) if action == "create" else destroy(platforms):
        print(line)


if __name__ == "__main__":
    main()
