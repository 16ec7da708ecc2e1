"""A local imitation of the Hugging Face hub for tests: resolve redirects, a CDN with Range, the tree API.

Routes (the same shapes as the real hub, see app/models/hub.py):
- ``GET|HEAD /{owner}/{name}/resolve/{revision}/{path}``: LFS files answer 302 to
  ``/cdn/{sha256}`` with ``X-Linked-Size`` and ``X-Linked-Etag``; small (non-LFS) files are
  served directly with their git blob id as ETag, like the hub does;
- ``GET|HEAD /cdn/{sha256}``: the bytes with ``ETag: "{sha256}"``, honouring ``Range: bytes=N-`` /
  ``N-M`` (206, or 416 with ``Content-Range: bytes */SIZE`` past the end) and ``If-Range`` (a
  validator that is not the file's ETag gets the whole file with 200, as RFC 9110 says);
- ``GET /api/models/{owner}/{name}/tree/{revision}?recursive=true&expand=true``: JSON list;
- ``GET /api/models/{owner}/{name}/revision/{revision}``: ``{"id", "sha", "siblings"}``, the
  commit a branch, tag or commit id resolves to (404 with ``X-Error-Code: RevisionNotFound``
  or ``RepoNotFound`` otherwise).

Revisions: the files added under one (repo, revision) form a branch; its commit id is derived
from its contents (so replacing a file makes a new commit), `add_tag` names a branch's commit,
and every route accepts the branch name, a tag or the 40-hex commit id alike.

Fault injection: `hub.inject(Fault(...))` queues a fault for the next requests whose path
contains `match`: drop the connection after N body bytes, stall, answer a status, serve
corrupted bytes, ignore Range (answer 200), ignore If-Range (answer 206 whatever the validator),
or redirect elsewhere. `add_file` again with the same (repo, revision, path) replaces the file,
as a new commit on the hub would. `hub.requests` logs
(method, path, Range header) of every request, `hub.if_ranges` its If-Range header.

Run it by hand for a demo: ``python tests/http_fixture_server.py --help``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Fault:
    """One injected misbehaviour for requests whose path contains `match`.

    kind: "drop" (close after `after` body bytes), "stall" (send `after` bytes, then
    nothing for `seconds`, then close), "status" (answer `status`), "corrupt" (flip
    byte `after` of the file), "ignore_range" (answer 200 with the whole file),
    "ignore_if_range" (honour Range even when If-Range names another version),
    "redirect" (302 to `location`). `times` is how many requests it affects.
    """
    kind: str
    match: str = "/cdn/"
    after: int = 0
    seconds: float = 0.0
    status: int = 500
    location: str = ""
    times: int = 1


@dataclass
class HostedFile:
    """A file the fixture hub serves."""
    repo: str
    revision: str
    path: str
    data: bytes
    lfs: bool = True
    sha256: str = field(init=False)
    git_oid: str = field(init=False)

    def __post_init__(self):
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.git_oid = hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()


class HubFixture:
    """The server: add files, inject faults, read `endpoint`; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, rate: float | None = None):
        self.files: dict[tuple[str, str, str], HostedFile] = {}
        self.tags: dict[tuple[str, str], str] = {}      # (repo, tag) -> branch
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str | None]] = []
        self.if_ranges: list[str | None] = []     # the If-Range header of each request, in order
        self.rate = rate  # bytes per second for file bodies (None: as fast as possible)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.server = _Server((host, port), _Handler)
        self.server.hub = self
        self.thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add_file(self, repo: str, revision: str, path: str, data: bytes, lfs: bool = True) -> HostedFile:
        hosted = HostedFile(repo, revision, path, data, lfs)
        self.files[(repo, revision, path)] = hosted
        return hosted

    def add_tag(self, repo: str, tag: str, branch: str) -> None:
        self.tags[(repo, tag)] = branch

    def commit_of(self, repo: str, branch: str) -> str:
        """The commit id of a branch: a SHA-1 over its files, so new contents make a new commit."""
        digest = hashlib.sha1(f"{repo}@{branch}".encode())
        for (r, rev, p), hosted in sorted(self.files.items()):
            if r == repo and rev == branch:
                digest.update(f"{p}:{hosted.sha256}\n".encode())
        return digest.hexdigest()

    def branch_of(self, repo: str, revision: str) -> str | None:
        """The branch a branch name, tag or commit id stands for; None when there is none."""
        branches = sorted({rev for (r, rev, _p) in self.files if r == repo})
        if revision in branches:
            return revision
        if (repo, revision) in self.tags:
            return self.tags[(repo, revision)]
        return next((b for b in branches if self.commit_of(repo, b) == revision), None)

    def inject(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.match in path:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def by_sha(self, sha: str) -> HostedFile | None:
        return next((f for f in self.files.values() if f.sha256 == sha), None)

    def start(self) -> "HubFixture":
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(5)

    def __enter__(self) -> "HubFixture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    hub: HubFixture

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the client hung up (a pause, a cancel, a test's abort): expected here
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):  # keep test output quiet
        pass

    @property
    def hub(self) -> HubFixture:
        return self.server.hub

    def do_HEAD(self):
        self._route(head=True)

    def do_GET(self):
        self._route(head=False)

    def _route(self, head: bool):
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append((self.command, path, self.headers.get("Range")))
        self.hub.if_ranges.append(self.headers.get("If-Range"))
        fault = self.hub.take_fault(path)
        if fault is not None and fault.kind == "status":
            return self._plain(fault.status, f"injected {fault.status}\n")
        if fault is not None and fault.kind == "redirect":
            return self._redirect(fault.location, {})
        tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path)
        if tree:
            return self._tree(tree.group(1), self.hub.branch_of(tree.group(1), tree.group(2)))
        revision = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
        if revision:
            return self._revision(revision.group(1), revision.group(2))
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if resolve:
            return self._resolve(resolve.group(1), resolve.group(2), resolve.group(3), head, fault)
        cdn = re.fullmatch(r"/cdn/([0-9a-f]{64})", path)
        if cdn and self.hub.by_sha(cdn.group(1)):
            hosted = self.hub.by_sha(cdn.group(1))
            return self._send_file(hosted, head, fault, {"ETag": f'"{hosted.sha256}"'})
        return self._plain(404, "Entry not found\n")

    def _revision(self, repo, revision):
        branch = self.hub.branch_of(repo, revision)
        if branch is None:
            known = any(r == repo for (r, _rev, _p) in self.hub.files)
            code = "RevisionNotFound" if known else "RepoNotFound"
            return self._plain(404, f"{code}: {repo}@{revision}\n", {"X-Error-Code": code})
        siblings = [{"rfilename": p} for (r, rev, p) in sorted(self.hub.files) if r == repo and rev == branch]
        body = json.dumps({"id": repo, "sha": self.hub.commit_of(repo, branch), "siblings": siblings}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _resolve(self, repo, revision, path, head, fault):
        hosted = self.hub.files.get((repo, self.hub.branch_of(repo, revision), path))
        if hosted is None:
            return self._plain(404, "Entry not found\n", {"X-Error-Code": "EntryNotFound"})
        if hosted.lfs:
            return self._redirect(f"/cdn/{hosted.sha256}", {
                "X-Linked-Size": str(len(hosted.data)), "X-Linked-Etag": f'"{hosted.sha256}"',
                "ETag": f'"{hosted.sha256}"'})
        return self._send_file(hosted, head, fault, {"ETag": f'"{hosted.git_oid}"'})

    def _tree(self, repo, revision):
        items, folders = [], set()
        for (r, rev, p), hosted in sorted(self.hub.files.items()):
            if r != repo or rev != revision:
                continue
            parts = p.split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
            item = {"type": "file", "path": p, "size": len(hosted.data), "oid": hosted.git_oid}
            if hosted.lfs:
                item["size"] = len(hosted.data)
                item["lfs"] = {"oid": hosted.sha256, "size": len(hosted.data), "pointerSize": 134}
            items.append(item)
        if not items:
            return self._plain(404, "Repository or revision not found\n")
        items += [{"type": "directory", "path": f, "oid": "0" * 40, "size": 0} for f in sorted(folders)]
        body = json.dumps(items).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, hosted: HostedFile, head: bool, fault: Fault | None, extra: dict):
        data = hosted.data
        if fault is not None and fault.kind == "corrupt":
            index = min(fault.after, len(data) - 1)
            data = data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:]
        start, end = 0, len(data) - 1
        status = 200
        wanted = self.headers.get("Range")
        validator = self.headers.get("If-Range")
        if validator is not None and validator.strip() != extra.get("ETag") and not (
                fault is not None and fault.kind == "ignore_if_range"):
            wanted = None      # another version than the client's part: the whole file, 200
        if wanted and not (fault is not None and fault.kind == "ignore_range"):
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if match:
                start = int(match.group(1))
                end = min(int(match.group(2)), len(data) - 1) if match.group(2) else len(data) - 1
                if start >= len(data):
                    return self._plain(416, "Range Not Satisfiable\n", {"Content-Range": f"bytes */{len(data)}"})
                status = 206
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if head:
            return
        body = memoryview(data)[start:end + 1]
        limit = len(body)
        if fault is not None and fault.kind in ("drop", "stall"):
            limit = min(fault.after, len(body))
        self._write_paced(body[:limit])
        if fault is not None and fault.kind == "stall":
            self.hub.stopping.wait(fault.seconds)
        if limit < len(body):
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)

    def _write_paced(self, body: memoryview):
        step = 16384
        for i in range(0, len(body), step):
            if self.hub.stopping.is_set():
                return
            self.wfile.write(body[i:i + step])
            if self.hub.rate:
                time.sleep(step / self.hub.rate)

    def _redirect(self, location: str, extra: dict):
        self.send_response(302)
        self.send_header("Location", location)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _plain(self, status: int, text: str, extra: dict | None = None):
        body = text.encode()
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve files like the Hugging Face hub, for demos and tests.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--file", nargs=4, action="append", default=[], metavar=("REPO", "REVISION", "PATH", "LOCAL"),
                        help="serve LOCAL as REPO@REVISION:PATH (an LFS file unless PATH ends in .json)")
    parser.add_argument("--rate", type=float, default=None, help="bytes per second for file bodies")
    parser.add_argument("--drop-after", type=int, default=None, help="drop the first CDN download after N bytes")
    args = parser.parse_args()
    hub = HubFixture(port=args.port, rate=args.rate)
    for repo, revision, path, local in args.file:
        with open(local, "rb") as f:
            hub.add_file(repo, revision, path, f.read(), lfs=not path.endswith(".json"))
    if args.drop_after is not None:
        hub.inject(Fault("drop", after=args.drop_after))
    hub.start()
    print(hub.endpoint, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
