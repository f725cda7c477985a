"""Memory before auth: a 300 MiB JSON body with no key to ``POST /v1/runs`` (issue 9).

Starts the API of the tree at REPO under uvicorn (a database at head in a temporary folder),
streams the body until the server answers, and prints the answer, how long it took, how much
was sent, and the server's ``VmRSS`` before and at its peak (``/proc/<pid>/status``)::

    PYTHONPATH=REPO python scripts/measure_request_limits.py REPO

docs/security.md ("Request limits") has the numbers, before and after.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

MiB = 1024**2
BODY = 300 * MiB


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main(repo: Path) -> None:
    sys.path.insert(0, str(repo))
    from jobs.records import upgrade_to_head

    root = Path(tempfile.mkdtemp())
    url = f"sqlite:///{root / 'resnet.db'}"
    upgrade_to_head(url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "RESNET_STATE_DIR": str(root),
           "RESNET_DATABASE_URL": url}  # fmt: skip
    command = [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(command, cwd=repo, env=env)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        before = peak = rss(server.pid)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            started = time.monotonic()
            sock.sendall(
                b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % BODY
            )
            sock.settimeout(0.001)
            reply, sent, block = b"", 0, b"[" * MiB
            while sent < BODY and not reply:
                try:
                    sock.sendall(block)
                    sent += MiB
                except (BlockingIOError, TimeoutError):
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    break
                with contextlib.suppress(BlockingIOError, TimeoutError):
                    reply += sock.recv(65536)
                peak = max(peak, rss(server.pid))
            sock.settimeout(120)
            while b"\r\n\r\n" not in reply:
                reply += sock.recv(65536)
            took = time.monotonic() - started
            peak = max(peak, rss(server.pid))
        print(
            f"{repo}: {reply.split()[1].decode()} after {took:.2f} s, {sent // MiB} MiB sent; "
            f"server RSS {before / MiB:.0f} MiB before, peak {peak / MiB:.0f} MiB "
            f"(+{(peak - before) / MiB:.0f} MiB)"
        )
    finally:
        server.terminate()
        server.wait(15)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
