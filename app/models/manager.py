"""ModelManager: the one object the CLI and the GUI use to list, fetch, import, verify and remove models.

Catalog entries are legacy ggml files (`download`: verified against the catalog or the hub's
HEAD) or public GGUF files (`download` runs `add_gguf`: pinned to a commit, verified against the
tree API's LFS SHA-256, then opened with the engine's GGUF reader before it is recorded).

Every method that moves bytes blocks and reports through plain callbacks, so the caller
chooses the thread: the CLI runs `download` in a `threading.Thread`, the GUI in a QThread
whose wrapper forwards `on_progress(Progress)` to a signal and calls `control.pause()` or
`control.cancel()` from its buttons. Nothing here imports Qt.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app import paths
from app.models.atomic import fsync_dir, replace_durably
from app.models.catalog import CACHE_NAME, SHIPPED_CATALOG, Catalog, CatalogEntry, gguf_model_id, gguf_refusal, gguf_type_of
from app.models.connection import HttpClient, HttpStatusError, NetworkError, RedirectRefused
from app.models.download import (DiskFullError, DownloadControl, DownloadError, Downloader, Expected, discard_partial,
                                 part_path, read_sidecar, sha256_file, sidecar_path)
from app.models.gguf_install import GGUFError, GGUFPlan, check_gguf, check_gguf_path, plan_gguf
from app.models.hf_checkpoint import (OUTPUT_TYPES, CheckpointError, CheckpointPlan, default_output_type,
                                      fetch_checkpoint, plan_checkpoint, program_version, staging_dir)
from app.models.hub import Hub, RevisionNotFound, check_repo_name, endpoint_from
from app.models.manifest import MANIFEST_NAME, InstalledModel, Manifest, now_utc
from app.models.tokenizer_cache import TokenizerCache
from app.units import free_ram_bytes, human_bytes


class ModelError(Exception):
    """A model operation the user asked for cannot be done (unknown id, refused import...)."""


class UsageError(ModelError):
    """The request itself is wrong (unknown id, missing file): the CLI exits with 2."""


class UnknownModel(UsageError, KeyError):
    """No catalog entry or installed model has this id."""

    def __str__(self) -> str:
        return self.args[0]


@dataclass
class ModelStatus:
    """A row of the model list: catalog facts (None for imports) and installation state."""
    id: str
    entry: CatalogEntry | None
    installed: InstalledModel | None
    file: Path | None
    partial_bytes: int

    def to_dict(self) -> dict:
        out = self.entry.to_dict() if self.entry else {"id": self.id, "name": self.id, "repo": None,
                                                       "revision": None, "path": None}
        out.update(installed=self.installed is not None,
                   file=str(self.file) if self.file else None,
                   partial_bytes=self.partial_bytes)
        if self.installed:
            out.update(installed_sha256=self.installed.sha256, origin=self.installed.origin,
                       installed_size=self.installed.size, tokenizer_file=self.installed.tokenizer)
            if self.installed.commit:
                out.update(repo=self.installed.repo, revision=self.installed.revision,
                           commit=self.installed.commit, source_sha256=self.installed.source_sha256,
                           output_type=self.installed.output_type, engine_version=self.installed.engine_version)
        return out


@dataclass
class DownloadResult:
    """A finished download: the manifest record and any warning (e.g. tokenizer unavailable)."""
    record: InstalledModel
    warnings: list[str]


@dataclass
class HFInstall:
    """A finished add-hf: the manifest record and where the downloaded checkpoint stays (None: deleted)."""
    record: InstalledModel
    checkpoint_dir: Path | None
    already_installed: bool = False

    def to_json(self, models_dir: Path) -> dict:
        r = self.record
        return {"id": r.id, "path": str(models_dir / r.file), "repo": r.repo, "revision": r.revision,
                "commit": r.commit, "type": r.output_type, "sha256": r.sha256}


@dataclass
class GGUFInstall:
    """A finished add-gguf: the manifest record (repo, commit, file, size, sha256, type)."""
    record: InstalledModel
    already_installed: bool = False

    def to_json(self, models_dir: Path) -> dict:
        r = self.record
        return {"id": r.id, "path": str(models_dir / r.file), "repo": r.repo, "revision": r.revision,
                "commit": r.commit, "type": r.output_type, "sha256": r.sha256, "size": r.size}


@dataclass
class VerifyResult:
    """The outcome of re-hashing one installed model."""
    id: str
    ok: bool
    message: str


class ModelManager:
    """Catalog + downloader + manifest for one models folder and one hub endpoint."""

    def __init__(self, models_dir: Path | None = None, endpoint: str | None = None, *,
                 catalog_path: Path = SHIPPED_CATALOG, cache_dir: Path | None = None,
                 stall_timeout: float = 30.0, retries: int = 5, backoff: float = 1.0):
        self.models_dir = Path(models_dir) if models_dir else paths.models_dir()
        self.cache_dir = Path(cache_dir) if cache_dir else paths.cache_dir()
        self.catalog_path = catalog_path
        self.catalog_cache = self.cache_dir / CACHE_NAME
        self.client = HttpClient(endpoint_from(endpoint), timeout=stall_timeout)
        self.hub = Hub(self.client)
        self.downloader = Downloader(self.client, stall_timeout=stall_timeout, retries=retries, backoff=backoff)
        self.tokenizers = TokenizerCache(self.cache_dir / "tokenizers", self.catalog_cache)
        self.catalog = Catalog.load(catalog_path, self.catalog_cache)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest.load(self.models_dir / MANIFEST_NAME)
        self._lock = threading.Lock()  # manifest changes may come from a worker and the GUI thread

    # -- catalog ---------------------------------------------------------------------------

    def refresh_catalog(self) -> list[str]:
        """Re-read sizes, hashes and file lists from the hub; returns the failures (offline: all)."""
        errors = Catalog.refresh(self.hub, self.catalog_path, self.catalog_cache)
        self.catalog = Catalog.load(self.catalog_path, self.catalog_cache)
        return errors

    def entry(self, model_id: str) -> CatalogEntry:
        entry = self.catalog.get(model_id)
        if entry is None:
            raise UnknownModel(f"no catalog entry {model_id!r} (see `python -m app.models list`)")
        return entry

    def statuses(self) -> list[ModelStatus]:
        """Every catalog entry, then every installed model that is not in the catalog."""
        rows = [self._status(e.id, e) for e in self.catalog]
        rows += [self._status(m.id, None) for m in sorted(self.manifest.models.values(), key=lambda m: m.id)
                 if self.catalog.get(m.id) is None]
        return rows

    def _status(self, model_id: str, entry: CatalogEntry | None) -> ModelStatus:
        record = self.manifest.get(model_id)
        file = self.manifest.file_path(record) if record else None
        partial = 0
        if entry is not None and record is None:
            part = part_path(self.models_dir / entry.filename)
            partial = part.stat().st_size if part.exists() else 0
        return ModelStatus(model_id, entry, record, file, partial)

    def installed_path(self, model_id: str) -> Path:
        record = self.manifest.get(model_id)
        if record is None:
            raise UnknownModel(f"model {model_id!r} is not installed")
        return self.manifest.file_path(record)

    # -- download --------------------------------------------------------------------------

    def expected_for(self, entry: CatalogEntry) -> tuple[Expected, str | None]:
        """What the file must hash to, and where that came from (None: nothing known).

        A SHA-256 shipped in the catalog wins; otherwise the hub's HEAD answer (it describes
        exactly the file the resolve URL serves now), else the cached tree listing.
        """
        if entry.sha256 and entry.facts_from == "shipped":
            return Expected(entry.size, entry.sha256), "catalog"
        try:
            head = self.hub.head(entry.repo, entry.revision, entry.path)
        except HttpStatusError as exc:
            if exc.status == 404:
                raise DownloadError(f"{entry.id}: {entry.repo}@{entry.revision}:{entry.path} is not on "
                                    f"{self.hub.endpoint} (HTTP 404)") from exc
            head = None
        except (NetworkError, RedirectRefused) as exc:
            if not entry.sha256:    # nothing to verify against, and the hub cannot be asked: say why
                raise DownloadError(f"{entry.id}: no connection to the hub {self.hub.endpoint} ({exc})") from exc
            head = None   # the download itself reports (and retries) network trouble
        if head is not None and head.sha256:
            return Expected(head.size, head.sha256), "hub HEAD"
        if entry.sha256:
            return Expected(entry.size, entry.sha256), entry.facts_from
        return Expected(head.size if head else entry.size, None), None

    def download(self, model_id: str, on_progress=None, control: DownloadControl | None = None,
                 allow_unverified: bool = False, with_tokenizer: bool = True) -> DownloadResult:
        """Download (or resume) a catalog model, verify it, record it; then fetch its tokenizer.

        Raises DownloadError (with DownloadStopped when paused/cancelled) or UnknownModel.
        """
        entry = self.entry(model_id)
        control = control or DownloadControl()
        if entry.format == "gguf":
            # never unverified: the tree API's LFS SHA-256 of the pinned commit, or nothing installed
            result = self.add_gguf(entry.repo, entry.path, entry.revision, on_progress=on_progress, control=control)
            return DownloadResult(result.record, [])
        expected, source = self.expected_for(entry)
        if expected.sha256 is None and not allow_unverified:
            raise DownloadError(f"{entry.id}: no SHA-256 is known for {entry.path} (the catalog has none and "
                                f"{self.hub.endpoint} gave none); refresh the catalog online, or allow an "
                                "unverified download explicitly")
        dest = self.models_dir / entry.filename
        url = entry.url(self.hub)
        verified = source or "nothing (unverified download allowed)"

        def record(path: Path, sha: str) -> None:
            self._record(InstalledModel(
                id=entry.id, file=path.name, sha256=sha, size=path.stat().st_size, origin="download",
                source=url, verified_against=verified, repo=entry.repo, revision=entry.revision,
                path=entry.path, installed_at=now_utc()))

        self.downloader.download(url, dest, expected, on_progress, control,
                                 meta={"entry_id": entry.id, "verified_against": verified}, on_complete=record)
        warnings = []
        if with_tokenizer:
            warning = self._fetch_tokenizer(entry, on_progress, control)
            if warning:
                warnings.append(warning)
        return DownloadResult(self.manifest.get(entry.id), warnings)

    def _fetch_tokenizer(self, entry: CatalogEntry, on_progress, control) -> str | None:
        """Fetch the tokenizer.json once; a failure is a warning (the engine can rebuild one)."""
        try:
            path = self.tokenizers.fetch(entry.tokenizer, self.hub, self.downloader, on_progress, control)
        except DownloadError as exc:
            return (f"tokenizer {entry.tokenizer.repo}/{entry.tokenizer.path} not downloaded ({exc}); the model "
                    "works with a tokenizer rebuilt from its vocabulary; download again to retry")
        with self._lock:
            record = self.manifest.get(entry.id)
            if record is not None:
                record.tokenizer = str(path)
                self.manifest.save()
        return None

    def tokenizer_path(self, model_id: str) -> Path | None:
        """The cached tokenizer.json for a catalog model, if it has been downloaded."""
        entry = self.catalog.get(model_id)
        return self.tokenizers.get(entry.tokenizer) if entry and entry.tokenizer else None

    def _record(self, record: InstalledModel) -> None:
        with self._lock:
            old = self.manifest.get(record.id)
            if old is not None and old.tokenizer and not record.tokenizer:
                record.tokenizer = old.tokenizer
            self.manifest.put(record)

    def recover(self, on_progress=None) -> list[str]:
        """Finish what a crash interrupted; returns one message per action taken.

        For each `.part.json` sidecar: a renamed file missing from the manifest is verified and
        recorded; a complete `.part` whose hash verifies is renamed and recorded (a wrong one is
        deleted); an incomplete `.part` is kept for a resume.
        """
        messages = []
        for side in sorted(self.models_dir.glob("*.part.json")):
            dest = self.models_dir / side.name[:-len(".part.json")]
            info = read_sidecar(dest) or {}
            meta = info.get("meta") if isinstance(info.get("meta"), dict) else {}
            model_id, sha, size = meta.get("entry_id"), info.get("sha256"), info.get("size")
            part = part_path(dest)
            gguf = meta.get("format") == "gguf" and all(isinstance(meta.get(k), str) for k in ("repo", "commit", "path"))
            if not model_id or (self.catalog.get(model_id) is None and not gguf):
                messages.append(f"{side.name}: not a download of a catalog model; left alone")
                continue
            if not part.exists() and not dest.exists():
                side.unlink()
                continue
            candidate = dest if not part.exists() else part
            if candidate is part and (size is None or part.stat().st_size != size or sha is None):
                continue  # an incomplete download: kept for a resume (statuses() shows it)
            hasher, _ = sha256_file(candidate)
            digest = hasher.hexdigest()
            if sha is not None and digest != sha:
                if candidate is part:
                    discard_partial(dest)
                    messages.append(f"{model_id}: the complete partial file does not match SHA-256 {sha}; deleted")
                else:
                    side.unlink()
                    messages.append(f"{model_id}: {dest.name} does not match SHA-256 {sha}; not recorded")
                continue
            if candidate is part:
                if gguf:
                    try:
                        check_gguf(part)        # interrupted between the hash check and the reader's
                    except DownloadError as exc:
                        discard_partial(dest)
                        messages.append(f"{model_id}: {exc}")
                        continue
                with open(part, "rb+") as f:
                    os.fsync(f.fileno())
                replace_durably(part, dest)
            if gguf:
                self._record(InstalledModel(
                    id=model_id, file=dest.name, sha256=digest, size=dest.stat().st_size, origin="download",
                    source=info.get("url", ""), verified_against=str(meta.get("verified_against", "recovered")),
                    repo=meta["repo"], revision=str(meta.get("revision", "")), path=meta["path"],
                    installed_at=now_utc(), commit=meta["commit"], output_type=str(meta.get("type", ""))))
            else:
                entry = self.entry(model_id)
                self._record(InstalledModel(
                    id=model_id, file=dest.name, sha256=digest, size=dest.stat().st_size, origin="download",
                    source=info.get("url", ""), verified_against=str(meta.get("verified_against", "recovered")),
                    repo=entry.repo, revision=entry.revision, path=entry.path, installed_at=now_utc()))
            side.unlink()
            messages.append(f"{model_id}: finished the download interrupted after it was verified")
        return messages

    # -- GGUF files of the hub -------------------------------------------------------------------

    def plan_gguf(self, repo: str, path: str, revision: str = "main") -> GGUFPlan:
        """Resolve `repo@revision` to a commit and read `path`'s LFS size and SHA-256 from its tree."""
        try:
            path = check_gguf_path(path)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        repo, revision = _checked_repo_and_revision(repo, revision)
        refusal = gguf_refusal(self.gguf_type(repo, path, revision) or "")
        if refusal:     # known before any network traffic: the file's type
            raise ModelError(f"{repo}/{path}: not supported: {refusal}")
        with self._asking_hub(repo, revision, GGUFError):
            plan = plan_gguf(self.hub, repo, path, revision)
        try:
            Catalog.remember(self.hub, repo, plan.revision, plan.tree, self.catalog_cache)
            self.catalog = Catalog.load(self.catalog_path, self.catalog_cache)
        except Exception:  # noqa: BLE001 - the listing only fills in the list's sizes; the install goes on
            pass
        return plan

    def gguf_type(self, repo: str, path: str, revision: str = "main") -> str | None:
        """The llama.cpp type of a GGUF file: the catalog's, else what its name says (None: neither)."""
        entry = self.catalog.find_file(repo, path, revision)
        return entry.quant if entry is not None and entry.format == "gguf" else gguf_type_of(path)

    def add_gguf(self, repo: str, path: str, revision: str = "main", *, on_progress=None,
                 control: DownloadControl | None = None, plan: GGUFPlan | None = None) -> GGUFInstall:
        """Install one GGUF file of a hub repository, pinned to the commit `revision` stands for.

        Its size and SHA-256 come from the tree API of that commit; the Downloader checks the free
        space, resumes (If-Range) and watches for stalls; the verified bytes must open in the
        engine's GGUF reader. Records repo, revision, commit, file, size, sha256 and type. Raises
        UsageError, ModelError (not in the tree, no LFS hash, unsupported type) or DownloadError
        (ChecksumMismatch, RefusedFile, DiskFullError, DownloadStopped); nothing is recorded then.
        """
        plan = plan or self.plan_gguf(repo, path, revision)
        repo, path = plan.repo, plan.file.path
        model_id = gguf_model_id(repo, path, plan.revision)
        existing = self.manifest.get(model_id)
        if (existing is not None and existing.commit == plan.commit and existing.sha256 == plan.sha256
                and self.manifest.file_path(existing).is_file()):
            return GGUFInstall(existing, already_installed=True)
        if existing is not None and existing.repo not in (None, repo):
            raise ModelError(f"{model_id} is already installed from {existing.repo}; remove it first")
        file_type = self.gguf_type(repo, path, plan.revision) or ""
        dest = self.models_dir / f"{model_id}.gguf"
        url = self.hub.resolve_url(repo, plan.commit, path)
        verified = f"hub tree of commit {plan.commit[:12]} (LFS SHA-256), opened by the GGUF reader"

        def record(done: Path, sha: str) -> None:
            self._record(InstalledModel(
                id=model_id, file=done.name, sha256=sha, size=done.stat().st_size, origin="download", source=url,
                verified_against=verified, repo=repo, revision=plan.revision, path=path, installed_at=now_utc(),
                commit=plan.commit, output_type=file_type or None))

        self.downloader.download(url, dest, Expected(plan.size, plan.sha256), on_progress, control or DownloadControl(),
                                 meta={"entry_id": model_id, "verified_against": verified, "format": "gguf",
                                       "repo": repo, "revision": plan.revision, "commit": plan.commit, "path": path,
                                       "type": file_type},
                                 on_complete=record, check=check_gguf)
        return GGUFInstall(self.manifest.get(model_id))

    # -- Hugging Face checkpoints -------------------------------------------------------------

    def plan_hf(self, repo: str, revision: str = "main", on_progress=None, control=None) -> CheckpointPlan:
        """Resolve `repo@revision` to a commit, fetch and check its config, choose its weights."""
        repo, revision = _checked_repo_and_revision(repo, revision)
        with self._asking_hub(repo, revision, CheckpointError):
            return plan_checkpoint(self.hub, self.downloader, repo, revision, self.models_dir, on_progress, control)

    @contextmanager
    def _asking_hub(self, repo: str, revision: str, refusal: type[Exception]):
        """The hub's answers as ModelErrors naming repo@revision: no such revision, a refusal of the
        caller's kind (its message), an HTTP error, no connection."""
        try:
            yield
        except (RevisionNotFound, refusal) as exc:
            raise ModelError(str(exc)) from exc
        except HttpStatusError as exc:
            raise ModelError(f"{repo}@{revision}: the hub answered {exc}") from exc
        except (NetworkError, RedirectRefused) as exc:
            raise ModelError(f"{repo}@{revision}: cannot reach {self.hub.endpoint}: {exc}") from exc

    def add_hf(self, repo: str, revision: str = "main", out_type: str | None = None, *, on_progress=None,
               control: DownloadControl | None = None, on_convert=None, conversion=None,
               keep_checkpoint: bool = True, plan: CheckpointPlan | None = None) -> HFInstall:
        """Install one revision of a GPT-NeoX repository: fetch it pinned to its commit, convert, record.

        `on_progress(Progress)` follows the downloads, `on_convert(ConversionProgress)` the
        conversion; `control` pauses/cancels downloads and `conversion` (a ConversionControl)
        cancels the conversion, which a later call resumes. Raises ModelError, DownloadError
        (DiskFullError before any byte when the downloads plus the output do not fit) or
        ConversionCancelled; nothing is recorded unless the converted file is complete.
        """
        from engine.convert import convert_hf
        from engine.errors import ModelFormatError

        if out_type is not None and out_type not in OUTPUT_TYPES:
            raise UsageError(f"output type {out_type!r}: expected one of {', '.join(OUTPUT_TYPES)}")
        plan = plan or self.plan_hf(repo, revision, on_progress, control)
        out_type = out_type or default_output_type(plan.n_params, free_ram_bytes())
        model_id = hf_model_id(plan.repo, plan.revision, out_type)
        existing = self.manifest.get(model_id)
        if existing is not None and existing.repo != plan.repo:   # same name under another owner
            model_id = plan.repo.replace("/", "--") + model_id[model_id.index("@"):]
            existing = self.manifest.get(model_id)
        if existing is not None and existing.commit == plan.commit and self.manifest.file_path(existing).is_file():
            return HFInstall(existing, None, already_installed=True)
        folder = staging_dir(self.models_dir, plan.repo, plan.commit)
        dest = self.models_dir / f"{model_id}.bin"
        self._check_hf_space(plan, folder, dest, out_type)
        try:
            sources = fetch_checkpoint(self.hub, self.downloader, plan, folder, on_progress, control)
        except CheckpointError as exc:
            raise ModelError(str(exc)) from exc
        source_id = plan.commit + ";" + ";".join(f"{p}={sha}" for p, sha in sorted(sources.items()))
        try:
            convert_hf(folder, dest, out_type, on_progress=on_convert, control=conversion, source_id=source_id)
        except ModelFormatError as exc:
            raise ModelError(f"{plan.repo}@{plan.revision} cannot be converted: {exc}") from exc
        tokenizer = None
        if (folder / "tokenizer.json").is_file():
            tokenizer = dest.with_name(dest.stem + ".tokenizer.json")
            shutil.copyfile(folder / "tokenizer.json", tokenizer)
        digest = sha256_file(dest)[0].hexdigest()
        record = InstalledModel(
            id=model_id, file=dest.name, sha256=digest, size=dest.stat().st_size, origin="huggingface",
            source=f"{self.hub.endpoint}/{plan.repo}/tree/{plan.commit}",
            verified_against="hub tree (LFS SHA-256 and git blob ids)", repo=plan.repo, revision=plan.revision,
            tokenizer=str(tokenizer) if tokenizer else None, installed_at=now_utc(), commit=plan.commit,
            source_sha256=sources, output_type=out_type, engine_version=program_version())
        self._record(record)
        if not keep_checkpoint:
            self.delete_checkpoint(plan.repo, plan.commit)
        return HFInstall(record, folder if keep_checkpoint else None)

    def _check_hf_space(self, plan: CheckpointPlan, folder: Path, dest: Path, out_type: str) -> None:
        """Free space for what is still to download plus the output, before the first byte."""
        missing = sum(f.size or 0 for f in plan.files if not (folder / f.path).is_file())
        output = 0 if dest.is_file() else plan.output_bytes(out_type)
        needed = missing + output
        folder.mkdir(parents=True, exist_ok=True)
        free = self.downloader.free_space(folder)
        if needed + self.downloader.reserve_bytes > free:
            raise DiskFullError(f"not enough free space in {self.models_dir} for {plan.repo}@{plan.revision}: "
                                f"{human_bytes(missing)} to download and {human_bytes(output)} of {out_type} output "
                                f"need {human_bytes(needed)} (+{human_bytes(self.downloader.reserve_bytes)} reserve) "
                                f"but {human_bytes(free)} is free")

    def delete_checkpoint(self, repo: str, commit: str) -> bool:
        """Delete the downloaded files of one commit (the converted model stays); False if none were kept."""
        folder = staging_dir(self.models_dir, repo, commit)
        if not folder.is_dir():
            return False
        shutil.rmtree(folder)
        parent = folder.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
        return True

    def revisions(self, repo: str) -> list[InstalledModel]:
        """The installed revisions of one repository, in the order they were installed."""
        return sorted((m for m in self.manifest.models.values() if m.repo == repo and m.commit),
                      key=lambda m: m.installed_at)

    # -- import, verify, remove ------------------------------------------------------------

    def import_file(self, source: Path, link: bool = False) -> InstalledModel:
        """Validate a local ggml or GGUF file with the engine's reader, then copy (or hard-link) it in."""
        from engine.errors import ModelFormatError
        from engine.model_file import is_gguf, open_model_file

        source = Path(source)
        if not source.is_file():
            raise UsageError(f"{source}: no such file")
        try:
            with open_model_file(source):
                pass
        except ModelFormatError as exc:
            raise ModelError(f"refused to import {source}: not a usable GPT-NeoX model file: {exc}") from exc
        hasher, size = sha256_file(source)
        sha = hasher.hexdigest()
        same = next((m for m in self.manifest.models.values() if m.sha256 == sha), None)
        if same is not None:
            raise ModelError(f"{source} is already installed as {same.id} ({self.manifest.file_path(same)})")
        entry = self.catalog.find_sha256(sha)
        model_id = entry.id if entry else _local_id(source, self.catalog, self.manifest)
        suffix = ".gguf" if is_gguf(source) else ".bin"
        dest = self.models_dir / (entry.filename if entry else f"{model_id}{suffix}")
        how = self._link_or_copy(source, dest, sha) if link else self._copy(source, dest, sha)
        record = InstalledModel(
            id=model_id, file=dest.name, sha256=sha, size=size, origin="import", source=str(source.resolve()),
            verified_against=("catalog" if entry else "engine header check") + f" ({how})",
            repo=entry.repo if entry else None, revision=entry.revision if entry else None,
            path=entry.path if entry else None, installed_at=now_utc())
        self._record(record)
        return record

    def _link_or_copy(self, source: Path, dest: Path, sha: str) -> str:
        try:
            os.link(source, dest)
            fsync_dir(dest.parent)
            return "hard link"
        except FileExistsError as exc:
            raise ModelError(f"{dest} already exists; remove it first") from exc
        except OSError:
            return self._copy(source, dest, sha) + ", linking not possible"

    def _copy(self, source: Path, dest: Path, sha: str) -> str:
        if dest.exists():
            raise ModelError(f"{dest} already exists; remove it first")
        size = source.stat().st_size
        free = Downloader.free_space(dest.parent)
        if size > free:
            raise DiskFullError(f"not enough free space in {dest.parent} to import {source.name}: "
                                f"{size} bytes needed, {free} free")
        tmp = dest.with_name(dest.name + ".importing")
        try:
            with open(source, "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 4 * 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            hasher, _ = sha256_file(tmp)
            if hasher.hexdigest() != sha:
                raise ModelError(f"{source} changed while it was being copied; try again")
            replace_durably(tmp, dest)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(f"disk full while copying {source} to {dest}") from exc
            raise ModelError(f"cannot copy {source} to {dest}: {exc.strerror or exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        return "copy"

    def verify(self, model_ids: list[str] | None = None, on_progress=None) -> list[VerifyResult]:
        """Re-hash installed files against the manifest (and the catalog, when it knows better)."""
        ids = model_ids if model_ids else sorted(self.manifest.models)
        results = []
        for model_id in ids:
            record = self.manifest.get(model_id)
            if record is None:
                raise UnknownModel(f"model {model_id!r} is not installed")
            path = self.manifest.file_path(record)
            if not path.is_file():
                results.append(VerifyResult(model_id, False, f"{path} is missing"))
                continue
            progress = (lambda done, _id=model_id: on_progress(_id, done, record.size)) if on_progress else None
            digest = sha256_file(path, progress)[0].hexdigest()
            entry = self.catalog.get(model_id)
            if digest != record.sha256:
                results.append(VerifyResult(model_id, False, f"{path}: SHA-256 {digest} differs from the "
                                                             f"recorded {record.sha256}: the file changed"))
            elif entry is not None and entry.sha256 and entry.sha256 != digest:
                results.append(VerifyResult(model_id, False, f"{path}: SHA-256 {digest} differs from the "
                                                             f"catalog's {entry.sha256} ({entry.facts_from})"))
            else:
                results.append(VerifyResult(model_id, True, f"{path}: SHA-256 {digest} OK"))
        return results

    def remove(self, model_id: str) -> list[str]:
        """Delete an installed model (and any partial download of it); returns what was removed."""
        removed = []
        with self._lock:
            record = self.manifest.get(model_id)
            if record is not None:
                path = self.manifest.file_path(record)
                path.unlink(missing_ok=True)
                self.manifest.drop(model_id)
                removed.append(str(path))
                if record.origin == "huggingface" and record.tokenizer and Path(record.tokenizer).is_file():
                    Path(record.tokenizer).unlink()     # the converted model's own copy
                    removed.append(record.tokenizer)
        if model_id == _SAFE_ID.sub("", model_id):
            # a conversion cancelled and never resumed: its partial output and journal
            from engine.convert import partial_paths
            for leftover in partial_paths(self.models_dir / f"{model_id}.bin"):
                if leftover.is_file():
                    leftover.unlink()
                    removed.append(str(leftover))
        entry = self.catalog.get(model_id)
        dests = [self.models_dir / entry.filename] if entry is not None else []
        if model_id == _SAFE_ID.sub("", model_id):
            dests.append(self.models_dir / f"{model_id}.gguf")    # an add-gguf of a file the catalog lacks
        for dest in dict.fromkeys(dests):
            for leftover in (part_path(dest), sidecar_path(dest)):
                if leftover.exists():
                    leftover.unlink()
                    removed.append(str(leftover))
        if not removed:
            if entry is None:
                raise UnknownModel(f"no model {model_id!r} is installed or in the catalog")
            raise UsageError(f"{model_id} is not installed")
        return removed


def _checked_repo_and_revision(repo: str, revision: str) -> tuple[str, str]:
    """`owner/name` and a branch, tag or commit name, stripped; UsageError naming a bad one."""
    try:
        repo = check_repo_name(repo)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not revision or not revision.strip() or "/" in revision.strip(" ."):
        raise UsageError(f"revision {revision!r} is not a branch, tag or commit name")
    return repo, revision.strip()


_SAFE_ID = re.compile(r"[^A-Za-z0-9._@-]+|^\.+")    # what an id may not contain to name a file here


def hf_model_id(repo: str, revision: str, out_type: str) -> str:
    """'EleutherAI/pythia-70m', 'step3000', 'q8_0' -> 'pythia-70m@step3000-q8_0' (a commit id is cut to 12)."""
    name = repo.rpartition("/")[2]
    rev = revision[:12] if re.fullmatch(r"[0-9a-f]{40}", revision) else revision
    rev = re.sub(r"[^A-Za-z0-9._-]+", "-", rev).strip("-.") or "rev"
    return f"{name}@{rev}-{out_type}"


def _local_id(source: Path, catalog: Catalog, manifest: Manifest) -> str:
    """An id for an imported file that is not in the catalog: 'local-<stem>', made unique."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", source.stem).strip("-") or "model"
    base = f"local-{stem}"
    candidate, n = base, 2
    while catalog.get(candidate) is not None or manifest.get(candidate) is not None:
        candidate, n = f"{base}-{n}", n + 1
    return candidate
