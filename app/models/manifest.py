"""The manifest: which model files are installed, where they came from, and their SHA-256.

It is one JSON file next to the models (`<models dir>/manifest.json`), rewritten atomically
on every change so that a crash leaves either the old or the new version. A manifest that
cannot be read is moved aside (the user's files are not touched) and an empty one is used;
`Manifest.warnings` says so.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from app.models.atomic import write_json_atomic

MANIFEST_NAME = "manifest.json"


@dataclass
class InstalledModel:
    """One installed model file.

    `file` is relative to the models folder. `origin` is "download", "import" or "huggingface"
    (converted here from a checkpoint); `source` the URL or the imported file's original path;
    `verified_against` where the expected SHA-256 came from ("catalog", "hub HEAD", "hub tree
    ..."), or why nothing was compared. A converted checkpoint also records its provenance:
    the `revision` asked for, the `commit` the hub resolved it to, each source file's SHA-256,
    the `output_type` and the version of the program that converted it.
    """
    id: str
    file: str
    sha256: str
    size: int
    origin: str
    source: str
    verified_against: str
    repo: str | None = None
    revision: str | None = None
    path: str | None = None
    tokenizer: str | None = None
    installed_at: str = ""
    commit: str | None = None
    source_sha256: dict[str, str] | None = None
    output_type: str | None = None
    engine_version: str | None = None

    @classmethod
    def from_dict(cls, doc: dict) -> "InstalledModel":
        """A record from its JSON object; TypeError/ValueError naming the field if one is wrong."""
        if not isinstance(doc, dict):
            raise TypeError(f"a model record is a {type(doc).__name__}, not an object")
        values = {}
        for f in fields(cls):
            if f.name in doc:
                if not FIELD_CHECKS[f.type](doc[f.name]):
                    raise ValueError(f"field {f.name!r} of a model record is {_show(doc[f.name])}, "
                                     f"not {FIELD_MEANING[f.type]}")
                values[f.name] = doc[f.name]
        file = values.get("file")
        if file is not None and (Path(file).name != file or file in ("", ".", "..")):
            # `remove` deletes this file: it must be a name inside the models folder, nothing else
            raise ValueError(f"field 'file' of a model record is {file!r:.80}, not a file name in the models folder")
        return cls(**values)


# What a record's JSON values must be, by the annotation of the field (a test checks every field has one).
FIELD_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "str": lambda v: isinstance(v, str),
    "str | None": lambda v: v is None or isinstance(v, str),
    "dict[str, str] | None": lambda v: v is None or (isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items())),
}
FIELD_MEANING = {"int": "a byte count", "str": "text", "str | None": "text or null",
                 "dict[str, str] | None": "an object of texts or null"}


def _show(value) -> str:
    try:
        return repr(value)[:40]
    except ValueError:      # an int too long to print
        return "a huge number"


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Manifest:
    """The installed models of one models folder, keyed by id."""

    def __init__(self, path: Path, models: dict[str, InstalledModel] | None = None):
        self.path = path
        self.models = models or {}
        self.warnings: list[str] = []

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        if not path.exists():
            return cls(path)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            records = [InstalledModel.from_dict(m) for m in doc["models"]]
            models = {m.id: m for m in records}
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
            path.replace(aside)
            manifest = cls(path)
            manifest.warnings.append(f"{path} could not be read ({exc!r}); moved it to {aside.name} "
                                     "and started an empty manifest")
            return manifest
        return cls(path, models)

    def save(self) -> None:
        write_json_atomic(self.path, {"format": 1,
                                      "models": [asdict(m) for m in sorted(self.models.values(), key=lambda m: m.id)]})

    def get(self, model_id: str) -> InstalledModel | None:
        return self.models.get(model_id)

    def put(self, record: InstalledModel) -> None:
        self.models[record.id] = record
        self.save()

    def drop(self, model_id: str) -> InstalledModel | None:
        record = self.models.pop(model_id, None)
        if record is not None:
            self.save()
        return record

    def file_path(self, record: InstalledModel) -> Path:
        return self.path.parent / record.file
