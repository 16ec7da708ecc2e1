"""A Hugging Face GPT-NeoX checkpoint at one revision: resolved, checked, and fetched pinned to its commit.

`plan_checkpoint` asks the hub which commit the revision (branch, tag or commit id) is now,
lists that commit's files through the tree API, downloads and checks `config.json` (only
`GPTNeoXForCausalLM` is accepted; anything else is refused naming its architecture), and picks
the weights: `model.safetensors`, its shards with `model.safetensors.index.json`,
`pytorch_model.bin`, or its shards with `pytorch_model.bin.index.json`. `fetch_checkpoint` then
downloads every file from the resolved commit (never the moving branch) into a staging folder
through the Downloader (resume, stall watchdog), checking each LFS file's SHA-256 against the
tree's `lfs.oid` and each small git file against its blob id.
"""
from __future__ import annotations

import importlib.metadata
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from app.models.download import DownloadError, Downloader, Expected
from app.models.hub import Hub, HubFile
from app.models.tokenizer_cache import git_blob_sha1

ARCHITECTURE = "GPTNeoXForCausalLM"
OUTPUT_TYPES = ("f16", "q8_0", "q5_1", "q4_0")
# Bytes per weight of each output type (ggml block sizes: q8_0 34/32, q5_1 24/32, q4_0 18/32).
BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q4_0": 18 / 32}
MAX_JSON_BYTES = 64 * 1024 * 1024        # config, index and tokenizer files are far smaller
RUNTIME_OVERHEAD = 512 * 1024 * 1024     # the app, numpy, numba and a KV cache besides the weights
_SHARD = re.compile(r"^(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)$")


class CheckpointError(Exception):
    """The repository or revision cannot be installed; the message says why."""


class NotGPTNeoX(CheckpointError):
    """config.json names another architecture than GPTNeoXForCausalLM."""


@dataclass
class CheckpointPlan:
    """What one revision of a repository is and which of its files make the model."""
    repo: str
    revision: str
    commit: str
    config: dict
    tree: dict[str, HubFile]
    weights: list[HubFile]
    index: HubFile | None
    tokenizer: HubFile | None
    n_params: int = 0
    files: list[HubFile] = field(init=False)

    def __post_init__(self):
        self.files = [f for f in [self.tree["config.json"], self.tokenizer, self.index, *self.weights] if f]

    @property
    def download_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)

    def output_bytes(self, out_type: str) -> int:
        """The converted file's size, near enough for a free-space check."""
        vocab = int(self.config.get("vocab_size", 0)) * 16
        return int(self.n_params * BYTES_PER_WEIGHT[out_type]) + vocab + 1024 * 1024


def check_config(config, repo: str, revision: str) -> None:
    """Refuse a config.json that is not a GPT-NeoX causal LM, naming what it is instead."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{repo}@{revision}: config.json is not a JSON object")
    archs = config.get("architectures")
    names = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
    if ARCHITECTURE not in names:
        what = ", ".join(names) if names else f"not given (model_type {config.get('model_type')!r})"
        raise NotGPTNeoX(f"{repo}@{revision} is not a GPT-NeoX model: config.json says the architecture is "
                         f"{what}; only {ARCHITECTURE} can be converted")
    from engine.convert import NeoXConfig
    from engine.errors import ModelFormatError
    try:
        NeoXConfig(config, Path(f"{repo}@{revision}/config.json"))
    except ModelFormatError as exc:
        raise CheckpointError(f"{repo}@{revision}: {exc}") from exc


def count_params(config: dict) -> int:
    """Weights of a GPT-NeoX of this config: embeddings, head and 12 E^2 + 13 E per layer."""
    try:
        vocab, embd, layers = (int(config[k]) for k in ("vocab_size", "hidden_size", "num_hidden_layers"))
    except (KeyError, TypeError, ValueError):
        return 0
    return 2 * vocab * embd + layers * (12 * embd * embd + 13 * embd) + 2 * embd


def program_version() -> str:
    """The installed program's version, recorded with each converted model."""
    try:
        return f"neox-writer {importlib.metadata.version('neox-writer')}"
    except importlib.metadata.PackageNotFoundError:
        return "neox-writer (version unknown: not installed as a package)"


def default_output_type(n_params: int, free_ram: int | None) -> str:
    """The most precise type whose weights leave room to run: f16, then q8_0, q5_1, q4_0."""
    if free_ram is None:
        return "q8_0"
    for out_type in OUTPUT_TYPES:
        if n_params * BYTES_PER_WEIGHT[out_type] + RUNTIME_OVERHEAD <= 0.8 * free_ram:
            return out_type
    return OUTPUT_TYPES[-1]


def staging_dir(models_dir: Path, repo: str, commit: str) -> Path:
    """Where one commit's downloaded files wait for (and survive) the conversion."""
    return models_dir / "hf-downloads" / repo.replace("/", "--") / commit


def plan_checkpoint(hub: Hub, downloader: Downloader, repo: str, revision: str, models_dir: Path,
                    on_progress=None, control=None) -> CheckpointPlan:
    """Resolve the revision, list its files, fetch and check config.json, choose the weights."""
    commit = hub.resolve_revision(repo, revision)
    tree = hub.tree(repo, commit)
    if "config.json" not in tree:
        raise CheckpointError(f"{repo}@{revision} ({commit[:12]}) has no config.json: not a transformers model")
    folder = staging_dir(models_dir, repo, commit)
    config = _read_json(_fetch(hub, downloader, repo, commit, tree["config.json"], folder, on_progress, control))
    check_config(config, repo, revision)
    index = next((tree[n] for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json") if n in tree), None)
    if index is not None:
        weight_map = _read_json(_fetch(hub, downloader, repo, commit, index, folder, on_progress, control))
        shards = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        if not isinstance(shards, dict) or not shards:
            raise CheckpointError(f"{repo}@{revision}: {index.path} has no weight_map")
        bad = [n for n in shards.values() if not isinstance(n, str) or not _SHARD.match(n)]
        if bad:
            raise CheckpointError(f"{repo}@{revision}: {index.path} names unexpected shard files {bad[:3]}")
        names = sorted(set(shards.values()))
        missing = [n for n in names if n not in tree]
        if missing:
            raise CheckpointError(f"{repo}@{revision}: shards {missing[:3]} listed in {index.path} are not in the "
                                  "repository")
        weights = [tree[n] for n in names]
    else:
        single = next((n for n in ("model.safetensors", "pytorch_model.bin") if n in tree), None)
        if single is None:
            raise CheckpointError(f"{repo}@{revision}: no weights (model.safetensors, pytorch_model.bin or their "
                                  "sharded forms) in the repository")
        weights = [tree[single]]
    for f in weights:
        if f.sha256 is None or f.size is None:
            raise CheckpointError(f"{repo}@{revision}: the tree API gives no LFS SHA-256 for {f.path}; "
                                  "it cannot be verified, so it is not downloaded")
    return CheckpointPlan(repo, revision, commit, config, tree, weights, index, tree.get("tokenizer.json"),
                          count_params(config))


def fetch_checkpoint(hub: Hub, downloader: Downloader, plan: CheckpointPlan, folder: Path,
                     on_progress=None, control=None) -> dict[str, str]:
    """Download every file of the plan into `folder` (pinned to its commit); returns path -> SHA-256."""
    return {f.path: _digest_of(_fetch(hub, downloader, plan.repo, plan.commit, f, folder, on_progress, control), f)
            for f in plan.files}


def _fetch(hub: Hub, downloader: Downloader, repo: str, commit: str, hub_file: HubFile, folder: Path,
           on_progress, control) -> Path:
    """One file of the commit, reused when already complete and still matching the hub's facts."""
    if "/" in hub_file.path or hub_file.path in (".", ".."):
        raise CheckpointError(f"{repo}: refusing file {hub_file.path!r} outside the repository's top folder")
    dest = folder / hub_file.path
    if dest.is_file() and _matches(dest, hub_file):
        return dest
    check = None
    if hub_file.sha256 is None:
        if hub_file.size is None or hub_file.size > MAX_JSON_BYTES:
            raise CheckpointError(f"{repo}: {hub_file.path} is {hub_file.size} bytes without an LFS SHA-256; "
                                  "refused")

        def check(part: Path, expected=hub_file.git_oid) -> None:
            got = git_blob_sha1(part.read_bytes())
            if expected and got != expected:
                raise DownloadError(f"{hub_file.path}: git blob id {got} does not match the tree's {expected}; "
                                    "nothing installed")
    digest = downloader.download(hub.resolve_url(repo, commit, hub_file.path), dest,
                                 Expected(hub_file.size, hub_file.sha256), on_progress, control,
                                 meta={"hf_repo": repo, "commit": commit, "path": hub_file.path}, check=check)
    # the verified SHA-256 beside the file: a resumed install reuses it without re-hashing gigabytes
    _digest_sidecar(dest).write_text(digest + "\n", encoding="ascii")
    return dest


def _matches(path: Path, hub_file: HubFile) -> bool:
    """A previously downloaded file still is the hub's: same size, same recorded SHA-256 or blob id."""
    if hub_file.size is not None and path.stat().st_size != hub_file.size:
        return False
    if hub_file.sha256 is not None:
        return _recorded_digest(path) == hub_file.sha256
    return hub_file.git_oid is not None and git_blob_sha1(path.read_bytes()) == hub_file.git_oid


def _digest_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_digest(path: Path) -> str | None:
    try:
        return _digest_sidecar(path).read_text(encoding="ascii").strip()
    except OSError:
        return None


def _digest_of(path: Path, hub_file: HubFile) -> str:
    return _recorded_digest(path) or hub_file.sha256 or ""


def _read_json(path: Path):
    if path.stat().st_size > MAX_JSON_BYTES:
        raise CheckpointError(f"{path.name} is larger than {MAX_JSON_BYTES} bytes; refused")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path.name} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise CheckpointError(f"{path.name} is nested too deeply to be a config") from None
