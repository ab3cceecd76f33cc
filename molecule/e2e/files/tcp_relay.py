"""SSH ProxyCommand of the end-to-end scenario: relay stdin/stdout to HOST:PORT.

On AWS, mlflow_ssh_proxy_command runs `aws ssm start-session ... AWS-StartSSHSession`,
which carries the SSH stream from the control node to port 22 of the instance. The test's
"instance" is a container on the scenario's docker network: this relay carries the same
stream over plain TCP to it. Everything else on the path (key, user, sshd, pipelining,
known hosts, the wait for boot) is the production one.

  python3 tcp_relay.py HOST PORT
"""

import os
import selectors
import socket
import sys


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    sock = socket.create_connection((host, port), timeout=30)
    sock.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin.buffer, selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "sock")
    stdin, stdout = sys.stdin.buffer.fileno(), sys.stdout.buffer.fileno()
    while True:
        for key, _ in sel.select():
            if key.data == "in":
                data = os.read(stdin, 65536)
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    sel.unregister(sys.stdin.buffer)
                    continue
                sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return
                while data:
                    data = data[os.write(stdout, data):]


if __name__ == "__main__":
    main()
