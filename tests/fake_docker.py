"""A `docker` command for tests: a script on PATH that hands its arguments to the test process,
where `FakeDocker` plays the docker engine and compose with a FakeCluster's recording nodes
(compose `up` starts nodes, `kill`/`stop` cut them off, `start` brings them back, `down`
stops them all). Every call is kept in `calls`, so a test can say which compose commands ran.

    with FakeCluster(names=[...]) as ..., FakeDocker(tmp_path, compose_file, cluster) as docker:
        monkeypatch.setenv("PATH", f"{docker.bin_dir}:{os.environ['PATH']}")
"""
from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SCRIPT = """#!{python}
import json, sys, urllib.request
request = urllib.request.Request({url!r}, data=json.dumps(sys.argv[1:]).encode(), method="POST")
answer = json.load(urllib.request.urlopen(request, timeout=120))
sys.stdout.write(answer["stdout"])
sys.stderr.write(answer["stderr"])
sys.exit(answer["code"])
"""


class FakeDocker:
    def __init__(self, folder: Path, compose_file: Path, cluster, running_project: str | None = None,
                 engine: bool = True):
        self.folder = Path(folder)
        self.compose_file = Path(compose_file).resolve()
        self.cluster = cluster
        self.running_project = running_project  # a project of this file running before the test
        self.engine = engine
        self.calls: list[list[str]] = []
        self.bin_dir = self.folder / "fake-docker-bin"
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> "FakeDocker":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                argv = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.calls.append(argv)
                try:
                    code, out, err = fake.answer(argv)
                except Exception as exc:  # a bug of the fake: the command fails loudly
                    code, out, err = 99, "", f"fake docker: {exc!r}"
                data = json.dumps({"code": code, "stdout": out, "stderr": err}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        script = self.bin_dir / "docker"
        script.write_text(SCRIPT.format(python=sys.executable,
                                        url=f"http://127.0.0.1:{self._server.server_address[1]}/"))
        script.chmod(0o755)
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def compose_calls(self) -> list[list[str]]:
        """The compose subcommands run against the file, without `compose -f FILE -p PROJECT`."""
        return [c[5:] for c in self.calls if c[:2] == ["compose", "-f"]]

    def projects(self) -> set[str]:
        return {c[4] for c in self.calls if c[:2] == ["compose", "-f"]}

    def answer(self, argv: list[str]) -> tuple[int, str, str]:
        if not self.engine:
            return 1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n"
        if argv[:1] == ["info"]:
            return 0, "27.3.1\n", ""
        if argv[:2] == ["compose", "version"]:
            return 0, "Docker Compose version v2.29.7\n", ""
        if argv[:2] == ["compose", "ls"]:
            running = [{"Name": self.running_project, "Status": "running(3)", "ConfigFiles": str(self.compose_file)}]
            return 0, json.dumps(running if self.running_project else []), ""
        if argv[:2] != ["compose", "-f"] or argv[3] != "-p":
            return 1, "", f"fake docker does not know {argv}\n"
        if Path(argv[2]).resolve() != self.compose_file:
            return 1, "", f"unknown compose file {argv[2]}\n"
        project, command = argv[4], argv[5:]
        if self.running_project not in (None, project):
            return 1, "", (f"Bind for 0.0.0.0:6333 failed: port is already allocated (project "
                           f"{self.running_project} holds it)\n")
        c = self.cluster
        services = [a for a in command[1:] if not a.startswith("-") and a in c.nodes]
        if command[0] == "up":
            for node in services or c.nodes:
                c.start(node)
            self.running_project = project
            return 0, "", ""
        if command[0] in ("kill", "stop"):
            for node in services:
                c.kill(node)
            return 0, "", ""
        if command[0] == "start":
            for node in services:
                c.start(node)
            return 0, "", ""
        if command[0] == "down":
            c.down()
            self.running_project = None
            return 0, "", ""
        if command[0] == "ps":
            return 0, "".join(f"{node}-container-id\n" for node in services if c.running(node)), ""
        return 1, "", f"fake docker compose does not know {command}\n"
