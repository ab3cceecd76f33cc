# The AWS API emulator (moto server) in a container of its own, so test hosts reach
# it on the docker network and no traffic leaves the machine. Built FROM the local
# Debian 12 image: no registry needed.
ARG BASE
FROM ${BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/moto \
 && /opt/moto/bin/pip install --no-cache-dir -q 'moto[server]==5.2.5' \
 && useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin moto
USER moto
EXPOSE 5000
CMD ["/opt/moto/bin/moto_server", "-H", "0.0.0.0", "-p", "5000"]
