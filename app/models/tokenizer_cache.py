"""tokenizer.json files of the models' tokenizer repositories, downloaded once into the cache.

The hub stores tokenizer.json as a plain git file (not LFS), so it has no SHA-256 on the
hub; what can be checked is its size, its git blob id (the tree API's `oid`:
SHA-1 of "blob <size>\\0" + content) when a cached listing has it, and that it is a
tokenizers JSON document at all.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from app.models.catalog import TokenizerSource, cached_hub_file
from app.models.connection import HttpStatusError, NetworkError, RedirectRefused
from app.models.download import ChecksumMismatch, DownloadControl, Downloader, Expected
from app.models.hub import Hub

MAX_TOKENIZER_BYTES = 64 * 1024 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class TokenizerCache:
    """One folder per tokenizer repository under the user cache folder."""

    def __init__(self, folder: Path, catalog_cache: Path):
        self.folder = folder
        self.catalog_cache = catalog_cache

    def path_for(self, source: TokenizerSource) -> Path:
        revision = "" if source.revision == "main" else f"@{source.revision}"
        return self.folder / (source.repo.replace("/", "--") + revision) / source.path.replace("/", "_")

    def get(self, source: TokenizerSource) -> Path | None:
        path = self.path_for(source)
        return path if path.is_file() else None

    def fetch(self, source: TokenizerSource, hub: Hub, downloader: Downloader,
              on_progress=None, control: DownloadControl | None = None) -> Path:
        """The cached file, downloading it first if needed. Raises DownloadError."""
        cached = self.get(source)
        if cached is not None:
            return cached
        listed = cached_hub_file(source.repo, source.revision, source.path, self.catalog_cache)
        size = listed.size if listed else None
        try:
            head = hub.head(source.repo, source.revision, source.path)
            size = head.size if head.size is not None else size
        except (NetworkError, RedirectRefused, HttpStatusError):
            pass  # the GET below reports the real problem
        dest = self.path_for(source)
        url = hub.resolve_url(source.repo, source.revision, source.path)
        downloader.download(url, dest, Expected(size, None), on_progress, control,
                            meta={"tokenizer": source.repo},
                            check=lambda part: self._check(part, listed.git_oid if listed else None))
        return dest

    @staticmethod
    def _check(path: Path, git_oid: str | None) -> None:
        """Refuse a download that is not a tokenizer or not the listed git blob."""
        data = path.read_bytes() if path.stat().st_size <= MAX_TOKENIZER_BYTES else b""
        problem = None
        if git_oid and git_blob_sha1(data) != git_oid:
            problem = f"git blob id {git_blob_sha1(data)} differs from the listed {git_oid}"
        else:
            try:
                doc = json.loads(data)
                if not isinstance(doc, dict) or "model" not in doc:
                    problem = "it is JSON but has no 'model' section"
            except ValueError as exc:
                problem = f"it is not JSON ({exc})"
        if problem:
            raise ChecksumMismatch(f"the downloaded {path.name} is not a usable tokenizer: {problem}; deleted")
