"""One GGUF file of a Hugging Face repository: resolved to a commit, its facts read from the tree API,
and its verified bytes checked with the engine's GGUF reader before they are installed.

`plan_gguf` resolves the revision to a commit first (as add-hf does), lists that commit's tree
and takes the file's size and SHA-256 from its LFS entry: the catalog never ships them, and
nothing is downloaded that the hub cannot give a SHA-256 for. `check_gguf` is the Downloader's
`check`: it runs on the complete, hash-verified `.part`, so a file our reader refuses (another
architecture, a tensor type it does not run, a damaged header) is deleted instead of installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.models.download import RefusedFile
from app.models.hub import Hub, HubFile


class GGUFError(Exception):
    """The file cannot be installed from the hub; the message names the file and the problem."""

    row_cause = "cannot be verified"        # for the model list's row (download.failure_cause)


class NotInTree(GGUFError):
    """The commit's tree has no such file."""

    row_cause = "not found"


@dataclass(frozen=True)
class GGUFPlan:
    """What one GGUF file of a repository is at the commit its revision stands for now."""
    repo: str
    revision: str
    commit: str
    file: HubFile
    tree: dict[str, HubFile]

    @property
    def size(self) -> int:
        return self.file.size

    @property
    def sha256(self) -> str:
        return self.file.sha256


def check_gguf_path(path: str) -> str:
    """A .gguf file's path inside a repository; a URL, an absolute path or '..' is refused."""
    path = path.strip()
    if not path.lower().endswith(".gguf") or path.startswith("/") or ".." in path.split("/") or "://" in path:
        raise ValueError(f"{path!r} is not the path of a .gguf file inside a repository")
    return path


def plan_gguf(hub: Hub, repo: str, path: str, revision: str = "main") -> GGUFPlan:
    """Resolve `revision`, list the commit's files and take `path`'s LFS size and SHA-256.

    Raises RevisionNotFound (no such repository or revision) or GGUFError (the file is not in the
    tree, or its entry has no LFS hash to verify against).
    """
    commit = hub.resolve_revision(repo, revision)
    tree = hub.tree(repo, commit)
    file = tree.get(path)
    if file is None:
        others = sorted(p for p in tree if p.lower().endswith(".gguf"))
        listed = (f"; its GGUF files are {', '.join(others[:8])}{' …' if len(others) > 8 else ''}" if others
                  else "; it has no GGUF files")
        raise NotInTree(f"{repo}@{revision} (commit {commit[:12]}) has no file {path!r}{listed}")
    if file.sha256 is None or file.size is None:
        raise GGUFError(f"{repo}@{revision} (commit {commit[:12]}): the tree API gives no LFS SHA-256 and size "
                        f"for {path}, so it cannot be verified; nothing installed")
    return GGUFPlan(repo, revision, commit, file, tree)


def check_gguf(part: Path) -> None:
    """The Downloader's check of the verified bytes: our GGUF reader must open them.

    Raises RefusedFile naming the problem (the Downloader then deletes the partial file).
    """
    from engine.errors import ModelFormatError
    from engine.model_file import is_gguf, open_model_file

    name = part.name[:-len(".part")] if part.name.endswith(".part") else part.name
    if not is_gguf(part):
        raise RefusedFile(f"{name} is not a GGUF file (it does not start with the GGUF magic); nothing installed")
    try:
        with open_model_file(part):
            pass
    except ModelFormatError as exc:
        raise RefusedFile(f"{name}: NeoX Writer's GGUF reader refuses it ({exc}); nothing installed") from exc
