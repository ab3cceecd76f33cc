# Amazon Linux 2023 test host with systemd as PID 1, for machines that can reach a
# registry (set MLFLOW_TEST_DISTROS to include al2023). Package names per AL2023 docs.
FROM public.ecr.aws/amazonlinux/amazonlinux:2023
COPY extra-ca/ /etc/pki/ca-trust/source/anchors/
RUN update-ca-trust \
 && dnf -y install systemd python3 sudo procps-ng iproute findutils \
 && dnf clean all \
 && systemctl mask systemd-remount-fs.service getty.target console-getty.service
CMD ["/usr/lib/systemd/systemd"]
