# A PostgreSQL host for the tests (systemd as PID 1, like the RDS stand-in it is).
# The cluster is configured (TLS, users) by the scenario's prepare playbook.
ARG BASE
FROM ${BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      postgresql postgresql-client python3-psycopg2 ssl-cert >/dev/null \
 && rm -rf /var/lib/apt/lists/*
CMD ["/lib/systemd/systemd"]
