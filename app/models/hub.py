"""The Hugging Face hub (or a mirror of it): file URLs, the tree API and HEAD metadata.

Facts used (the real hub cannot be reached from the development machines, so the test
server in tests/http_fixture_server.py imitates exactly these):
- a file downloads from ``{endpoint}/{repo}/resolve/{revision}/{path}``, which redirects
  to a CDN for LFS files;
- ``GET {endpoint}/api/models/{repo}/tree/{revision}?recursive=true&expand=true`` lists the
  files; LFS files carry ``lfs.size`` and ``lfs.oid`` (the SHA-256), every file ``oid``
  (its git blob SHA-1) and ``size``; long listings continue through a ``Link: rel="next"``;
- ``HEAD`` on the resolve URL without following the redirect returns ``X-Linked-Size`` and
  ``X-Linked-Etag`` (the SHA-256 in quotes) for LFS files;
- ``GET {endpoint}/api/models/{repo}/revision/{revision}`` answers ``{"sha": <commit>, ...}``
  for a branch, a tag or a commit id, and 404 (``X-Error-Code: RevisionNotFound`` or
  ``RepoNotFound``) for anything else.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from urllib.parse import quote, urljoin

from app.models.connection import HttpClient, HttpStatusError, NetworkError

DEFAULT_ENDPOINT = "https://huggingface.co"
ENDPOINT_ENV = "HF_ENDPOINT"
MAX_TREE_BYTES = 16 * 1024 * 1024   # a tree listing page larger than this is not one we asked for
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_REVISION_BYTES = 4 * 1024 * 1024


class RevisionNotFound(Exception):
    """The repository, or the revision in it, does not exist on the hub (the message says which)."""


def check_repo_name(repo: str) -> str:
    """`owner/name` as the hub spells repository ids; anything else (a URL, a path) is refused."""
    repo = repo.strip()
    if not _REPO.match(repo) or ".." in repo:
        raise ValueError(f"{repo!r} is not a Hugging Face repository id (expected owner/name)")
    return repo


def endpoint_from(setting: str | None = None) -> str:
    """The hub endpoint: an explicit setting, else $HF_ENDPOINT, else huggingface.co."""
    return (setting or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def clean_sha256(value: str | None) -> str | None:
    """Normalize an ETag-style value ('"abc.."', 'W/"abc.."') to a lowercase SHA-256 or None."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"').lower()
    return value if _SHA256.match(value) else None


@dataclass(frozen=True)
class HubFile:
    """What the hub says about one file: size, SHA-256 (LFS files only) and git blob id."""
    path: str
    size: int | None
    sha256: str | None
    git_oid: str | None = None


class Hub:
    """Builds hub URLs and reads file metadata through one HttpClient."""

    def __init__(self, client: HttpClient):
        self.client = client

    @property
    def endpoint(self) -> str:
        return self.client.endpoint

    def resolve_url(self, repo: str, revision: str, path: str) -> str:
        return f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def tree(self, repo: str, revision: str) -> dict[str, HubFile]:
        """All files of `repo` at `revision`, keyed by path."""
        url = (f"{self.endpoint}/api/models/{repo}/tree/{quote(revision, safe='')}"
               "?recursive=true&expand=true")
        files: dict[str, HubFile] = {}
        for _page in range(1000):
            with self.client.open("GET", url, headers={"Accept": "application/json"}) as resp:
                body = resp.read_all(MAX_TREE_BYTES)
                link = resp.header("Link")
            try:
                items = json.loads(body)
            except ValueError as exc:
                raise NetworkError(f"tree listing from {url} is not JSON: {exc}") from exc
            if not isinstance(items, list):
                raise NetworkError(f"tree listing from {url} is not a JSON list")
            for item in items:
                parsed = _parse_tree_item(item)
                if parsed is not None:
                    files[parsed.path] = parsed
            next_url = _next_link(link)
            if next_url is None:
                return files
            url = urljoin(url, next_url)
        raise NetworkError(f"tree listing of {repo}@{revision} did not end after 1000 pages")

    def resolve_revision(self, repo: str, revision: str) -> str:
        """The commit id a branch, tag or commit of `repo` stands for now.

        Raises RevisionNotFound naming the repository or the revision when the hub has neither.
        """
        url = f"{self.endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}"
        try:
            with self.client.open("GET", url, headers={"Accept": "application/json"}) as resp:
                body = resp.read_all(MAX_REVISION_BYTES)
        except HttpStatusError as exc:
            if exc.status in (401, 404):
                code = exc.headers.get("X-Error-Code", "")
                if code == "RepoNotFound" or exc.status == 401:
                    raise RevisionNotFound(f"repository {repo} was not found on {self.endpoint}") from exc
                raise RevisionNotFound(f"{repo} has no revision {revision!r} (no branch, tag or commit of "
                                       "that name)") from exc
            raise
        try:
            sha = json.loads(body).get("sha")
        except (ValueError, AttributeError) as exc:
            raise NetworkError(f"revision answer from {url} is not a JSON object") from exc
        if not isinstance(sha, str) or not _COMMIT.match(sha):
            raise NetworkError(f"revision answer from {url} has no commit id (sha = {sha!r:.60})")
        return sha

    def head(self, repo: str, revision: str, path: str) -> HubFile:
        """Size and SHA-256 from a HEAD on the resolve URL, without following its redirect."""
        url = self.resolve_url(repo, revision, path)
        with self.client.open("HEAD", url, follow_redirects=False) as resp:
            size = _int_or_none(resp.header("X-Linked-Size"))
            sha = clean_sha256(resp.header("X-Linked-Etag"))
            if size is None and resp.status == 200:
                size = _int_or_none(resp.header("Content-Length"))
        return HubFile(path, size, sha)


def _int_or_none(value) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _parse_tree_item(item) -> HubFile | None:
    if not isinstance(item, dict) or item.get("type") != "file" or not isinstance(item.get("path"), str):
        return None
    lfs = item.get("lfs") if isinstance(item.get("lfs"), dict) else None
    if lfs:
        return HubFile(item["path"], _int_or_none(lfs.get("size")), clean_sha256(lfs.get("oid")),
                       item.get("oid") if isinstance(item.get("oid"), str) else None)
    return HubFile(item["path"], _int_or_none(item.get("size")), None,
                   item.get("oid") if isinstance(item.get("oid"), str) else None)


def _next_link(link: str | None) -> str | None:
    if not link:
        return None
    for part in link.split(","):
        match = re.match(r'\s*<([^>]+)>\s*;.*rel="?next"?', part)
        if match:
            return match.group(1)
    return None
