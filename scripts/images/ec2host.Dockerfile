# A stand-in for the EC2 instance in the end-to-end scenario (molecule/e2e): Debian with
# systemd as PID 1, sshd and cloud-init. At boot, cloud-init's NoCloud datasource reads
# the instance's meta-data and the user-data the provision play launched it with (served
# from the AWS API emulator by molecule/e2e/files/cloud_init_seed.py), so the admin user
# and its SSH key arrive the way they do on EC2. Built FROM the local Debian image.
ARG BASE
FROM ${BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      cloud-init openssh-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/lib/cloud/* \
 && rm -f /etc/ssh/ssh_host_*
CMD ["/lib/systemd/systemd"]
