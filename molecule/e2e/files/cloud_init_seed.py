"""What EC2's instance metadata service is to cloud-init, for the end-to-end scenario.

The AWS API emulator launches no machine: molecule/e2e boots a container (the
`ec2host` image) whose cloud-init reads a NoCloud seed from this server at
http://<emulator>:8080/<deployment>/ . A request blocks until the emulator has a running
instance of that deployment (tags mlflow:deployment and mlflow:role=server), as a
booting EC2 instance waits for its metadata, then gets that instance's data:

  meta-data       instance-id
  user-data       the user data the provision play launched the instance with (verbatim)
  vendor-data     empty
  network-config  empty: the container keeps Docker's network

So the admin user and its SSH key reach the host through the same cloud-config
document and the same cloud-init that process it on EC2. Runs beside moto_server in
its container (python with boto3), on the emulator's docker network only.
"""

import argparse
import base64
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3

ARGS = None


def ec2():
    return boto3.client(
        "ec2",
        endpoint_url=ARGS.emulator,
        region_name=ARGS.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def find_instance(deployment):
    """The newest running instance of the deployment, or None."""
    pages = ec2().get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": "tag:mlflow:deployment", "Values": [deployment]},
            {"Name": "tag:mlflow:role", "Values": ["server"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )
    instances = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    return max(instances, key=lambda i: i["LaunchTime"]) if instances else None


def wait_for_instance(deployment):
    deadline = time.monotonic() + ARGS.wait
    while time.monotonic() < deadline:
        try:
            instance = find_instance(deployment)
        except Exception as exc:  # noqa: BLE001 - the emulator may still be starting
            print(f"emulator not answering yet: {exc}", flush=True)
            instance = None
        if instance:
            return instance
        time.sleep(2)
    return None


def user_data(instance_id):
    attr = ec2().describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    value = attr.get("UserData", {}).get("Value")
    return base64.b64decode(value) if value else b""


class Seed(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        parts = self.path.strip("/").split("/")
        if len(parts) != 2 or parts[1] not in ("meta-data", "user-data", "vendor-data", "network-config"):
            self.send_error(404)
            return
        deployment, item = parts
        instance = wait_for_instance(deployment)
        if instance is None:
            self.send_error(503, f"no running instance of deployment {deployment}")
            return
        if item == "meta-data":
            body = f"instance-id: {instance['InstanceId']}\n".encode()
        elif item == "user-data":
            body = user_data(instance["InstanceId"])
        elif item == "network-config":
            body = b"version: 2\n"
        else:
            body = b""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print(f"served {item} of {instance['InstanceId']} ({deployment})", flush=True)


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulator", default="http://127.0.0.1:5000")
    parser.add_argument("--region", required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--wait", type=int, default=1800, help="seconds a request waits for the instance")
    ARGS = parser.parse_args()
    ThreadingHTTPServer(("0.0.0.0", ARGS.port), Seed).serve_forever()  # noqa: S104 - the emulator's network


if __name__ == "__main__":
    main()
