"""The readers under fuzz: how each one reads a file, which errors are its own, and what "loaded" means.

A target reads one file (`read`, the part whose allocations are measured), then uses what it
read the way the program would (`use`): a model file the reader accepts must survive the
tokenizer rebuild and a forward pass through the compiled kernels, a story must save again in
both formats, a manifest must hold fields of the declared types. `errors` are the readers' own
exceptions (an allowed outcome when their message is not empty); anything else is a finding.
"""
from __future__ import annotations

import io
import json
import os
import pickletools
import shutil
import struct
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .mutate import BOUNDARY_INTS, Chooser, Seed, mutate_bytes, mutate_json

CORPUS = Path(__file__).resolve().parent / "corpus"


class Refused(Exception):
    """A later stage of loading refused the file with its own message (an allowed outcome)."""


class Target:
    """One reader: its seeds, how to mutate them and how to read and use a file."""

    name = ""
    filename = "input"       # the name the mutated file gets in the work folder
    errors: tuple = ()       # the reader's own exception types
    json = False             # structure-aware JSON mutations instead of byte-level ones

    def __init__(self):
        self._seeds: list[Seed] | None = None

    @property
    def seeds(self) -> list[Seed]:
        if self._seeds is None:
            self._seeds = self.load_seeds()
        return self._seeds

    def load_seeds(self) -> list[Seed]:
        folder = CORPUS / self.name
        return [self.describe(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()]

    def describe(self, name: str, data: bytes) -> Seed:
        """A seed with the offsets of its fields (subclasses that know the structure add them)."""
        return Seed(name, data)

    def mutate(self, ch: Chooser) -> tuple[str, bytes]:
        """(seed name, mutated bytes); one case in twenty is the seed itself."""
        seed = ch.pick(self.seeds)
        if ch.chance(20):
            return seed.name, seed.data
        if self.json:
            return seed.name, mutate_json(ch, seed, self.seeds)
        return seed.name, mutate_bytes(ch, seed, self.seeds)

    def prepare(self, workdir: Path, data: bytes) -> Path:
        """Put the case into the work folder; returns the path the reader opens."""
        path = workdir / self.filename
        path.write_bytes(data)
        return path

    def read(self, path: Path, ch: Chooser):
        raise NotImplementedError

    def use(self, obj, path: Path, ch: Chooser) -> None:
        """What the program does with a file it read (exceptions other than Refused are findings)."""

    def close(self, obj) -> None:
        pass


# -- model files --------------------------------------------------------------------------------

class ModelFileTarget(Target):
    """A model file reader: its own error is ModelFormatError."""

    @property
    def errors(self):
        from engine.errors import ModelFormatError
        return (ModelFormatError,)


@contextmanager
def seed_file(name: str, data: bytes):
    """A seed's bytes in a temporary file, for the reader that finds its structure."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fuzz-seed-{os.getpid()}-{name}"
    path.write_bytes(data)
    try:
        yield path
    finally:
        path.unlink()


def add_weight_fields(seed: Seed, t) -> None:
    """Where a tensor's float values are: all of them (f32, f16), or each block's scale (and min)."""
    from engine.quants import block_format
    fmt = block_format(t.type, t.qnt_version)
    if t.type == "f32":
        seed.f32_data.append((t.offset, t.data.size // 4))
    elif t.type == "f16":
        seed.f16_data.append((t.offset, t.data.size // 2))
    else:
        scales = seed.f16_data if fmt.scale_dtype == "f2" else seed.f32_data
        for b in range(t.offset, t.offset + t.data.size, fmt.nbytes):
            scales.append((b, 2 if fmt.has_min else 1))


class GGMLTarget(ModelFileTarget):
    """Legacy ggml files of every layout, era and type: reader, tokenizer rebuild, forward pass."""

    name = "ggml"
    filename = "model.bin"

    def describe(self, name, data):
        from engine.ggml_file import GGMLFile
        with seed_file(name, data) as path, GGMLFile(path) as f:
            seed = Seed(name, data, fields=list(range(4, 40, 4)))
            pos = 36 if f.layout == "gpt-neox" else 32
            for token in f.vocab:                     # every vocab length prefix
                seed.fields.append(pos)
                pos += 4 + len(token)
            for t in f.tensors.values():
                n_dims = len(t.shape)
                start = t.offset - len(t.name.encode()) - 4 * n_dims - 12
                seed.fields += [start, start + 4, start + 8] + [start + 12 + 4 * i for i in range(n_dims)]
                add_weight_fields(seed, t)
            return seed

    def read(self, path, ch):
        from engine.ggml_file import GGMLFile
        return GGMLFile(path)

    def use(self, f, path, ch):
        from engine.model import Model
        from engine.tokenizer import load_tokenizer
        model = Model(f, backend="fast", threads=ch.int(1, 2))
        try:
            tokenizer = load_tokenizer(model.vocab, None, source=f.path, embedded=f.embedded_tokenizer)
        except ValueError as exc:          # the rebuild's own refusal: a vocab without single bytes
            raise Refused(str(exc)) from exc
        tokenizer.decode(tokenizer.encode("Once upon a time, \u00e9t\u00e9 \U0001F600"))
        n_vocab, n_ctx = model.config.n_vocab, model.config.n_ctx
        session = model.new_session(min(n_ctx, 8))
        prompt = [0, n_vocab - 1, n_vocab // 2, 1 % n_vocab, 0, n_vocab - 1][:session.n_ctx - 1] or [0]
        if ch.chance(2):
            prompt = prompt[:2]               # short prompts go token by token through forward_token
        logits = session.eval(prompt, all_logits=True)
        assert logits.shape == (len(prompt), n_vocab), logits.shape
        if len(session.tokens) < session.n_ctx:
            assert session.eval([n_vocab - 1]).shape == (n_vocab,)

    def close(self, f):
        f.close()


class GGUFTarget(GGMLTarget):
    """GGUF files (v2 and v3, every type the engine runs, both QKV orders, with and without the
    marker): the reader, the tokenizer from the metadata, the QKV order detection, a forward pass."""

    name = "gguf"
    filename = "model.gguf"

    def describe(self, name, data):
        from engine.gguf_file import GGUFFile
        with seed_file(name, data) as path, GGUFFile(path) as f:
            seed = Seed(name, data, fields=gguf_fields(data))
            for t in f.tensors.values():
                if t.stored_type != "bf16":
                    add_weight_fields(seed, t)
            return seed

    def read(self, path, ch):
        from engine.gguf_file import GGUFFile
        return GGUFFile(path)


def gguf_fields(data: bytes) -> list[int]:
    """Offsets of a GGUF file's counts, lengths, type tags and tensor offsets (a walk of its structure)."""
    fields = [4, 8, 16]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)

    def string(pos):
        fields.append(pos)
        return pos + 8 + struct.unpack_from("<Q", data, pos)[0]

    def value(pos, vtype):
        if vtype == 8:
            return string(pos)
        if vtype != 9:
            return pos + SCALAR_SIZES[vtype]
        fields.extend([pos, pos + 4])                 # element type, count
        etype, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        if etype in SCALAR_SIZES:
            return pos + count * SCALAR_SIZES[etype]
        for _ in range(count):
            pos = value(pos, etype)
        return pos

    pos = 24
    for _ in range(n_kv):
        pos = string(pos)                             # key
        fields.append(pos)                            # value type
        pos = value(pos + 4, struct.unpack_from("<I", data, pos)[0])
    for _ in range(n_tensors):
        pos = string(pos)                             # name
        n_dims = struct.unpack_from("<I", data, pos)[0]
        fields.append(pos)
        fields.extend(pos + 4 + 8 * i for i in range(n_dims))
        pos += 4 + 8 * n_dims
        fields.extend([pos, pos + 4])                 # type, data offset
        pos += 12
    return sorted(set(fields))


SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class SafetensorsTarget(ModelFileTarget):
    """`.safetensors` files: header length, header JSON, data offsets; every tensor read."""

    name = "safetensors"
    filename = "model.safetensors"

    def describe(self, name, data):
        header_len = int.from_bytes(data[:8], "little")
        return Seed(name, data, fields=[0, 4, 8, 8 + header_len])

    def mutate(self, ch):
        seed = ch.pick(self.seeds)
        if ch.chance(2):          # edit the header JSON and keep the length prefix right
            header_len = int.from_bytes(seed.data[:8], "little")
            header = Seed(seed.name, seed.data[8:8 + header_len])
            text = mutate_json(ch, header, [])
            return seed.name, struct.pack("<Q", len(text)) + text + seed.data[8 + header_len:]
        return super().mutate(ch)

    def read(self, path, ch):
        from engine.safetensors_file import open_safetensors
        return open_safetensors(path)

    def use(self, f, path, ch):
        for name in f.names():
            tensor = f.tensors[name]
            try:
                array = f.array(name)
            except self.errors as exc:      # a dtype this reader does not turn into numbers
                if "dtype" not in str(exc):
                    raise
                continue
            assert array.shape == tensor.shape
            float(np.asarray(array, dtype=np.float64).sum())


class SafetensorsIndexTarget(SafetensorsTarget):
    """`model.safetensors.index.json` of a sharded checkpoint, next to its (intact) shards."""

    name = "safetensors-index"
    filename = "model.safetensors.index.json"
    json = True

    def load_seeds(self):
        return [s for s in super().load_seeds() if s.name.endswith(".index.json")]

    def describe(self, name, data):
        return Seed(name, data)

    def mutate(self, ch):
        return Target.mutate(self, ch)

    def prepare(self, workdir, data):
        for shard in (CORPUS / self.name).glob("*.safetensors"):
            if not (workdir / shard.name).exists():
                shutil.copy(shard, workdir / shard.name)
        return super().prepare(workdir, data)


class TorchPickleTarget(ModelFileTarget):
    """`pytorch_model.bin` zips: the restricted unpickler, storages and tensor views."""

    name = "torch-pickle"
    filename = "pytorch_model.bin"

    def describe(self, name, data):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
        fields = [i.header_offset for i in infos] + [i.header_offset + k for i in infos for k in (14, 18, 22, 26, 28)]
        eocd = data.rfind(b"PK\x05\x06")
        fields += [eocd + k for k in (8, 10, 12, 16)]
        return Seed(name, data, fields=sorted(f for f in fields if f < len(data)))

    def mutate(self, ch):
        seed = ch.pick(self.seeds)
        if ch.chance(3):
            return seed.name, mutate_bytes(ch, seed, self.seeds)      # the zip itself
        return seed.name, mutate_pickle_in_zip(ch, seed.data)         # the pickle, re-zipped intact

    def read(self, path, ch):
        from engine.torch_pickle import load_torch_state_dict
        return load_torch_state_dict(path)

    def use(self, state, path, ch):
        size = os.path.getsize(path)
        for name, array in state.items():
            # a view may repeat storage elements (stride 0), but never describe more elements than
            # the file holds: materializing it would allocate from an unchecked size
            assert array.size <= max(size, 1), f"{name}: {array.shape} view over a {size}-byte file"
            np.ascontiguousarray(array)


PICKLE_INT_OPS = {"BININT", "BININT1", "BININT2", "LONG1", "INT", "LONG"}


def mutate_pickle_in_zip(ch: Chooser, archive: bytes) -> bytes:
    """Edit data.pkl inside a torch zip (integers set to boundary values, bytes damaged), then re-zip."""
    src = zipfile.ZipFile(io.BytesIO(archive))
    members = [(info, src.read(info)) for info in src.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info, content in members:
            if info.filename.endswith("/data.pkl"):
                content = mutate_pickle(ch, content)
            dst.writestr(info.filename, content)
    return out.getvalue()


def mutate_pickle(ch: Chooser, data: bytes) -> bytes:
    """Integers of the pickle (sizes, strides, offsets, numels) replaced by boundary values."""
    ints = [(pos, op.name) for op, arg, pos in pickletools.genops(data) if op.name in PICKLE_INT_OPS]
    out = bytearray(data)
    if not ints or ch.chance(4):
        return mutate_bytes(ch, Seed("data.pkl", data), max_steps=2)
    for _ in range(ch.int(1, 3)):
        # re-parse after each edit: positions move when an integer changes width
        ints = [(pos, op.name) for op, arg, pos in pickletools.genops(bytes(out)) if op.name in PICKLE_INT_OPS]
        pos, opname = ch.pick(ints)
        length = _pickle_op_length(bytes(out), pos)
        value = ch.pick(BOUNDARY_INTS + (1 << 40, 1 << 62, -(1 << 62), 1 << 70))
        out[pos:pos + length] = _pickle_int(value)
    return bytes(out)


def _pickle_op_length(data: bytes, pos: int) -> int:
    ops = iter(pickletools.genops(data[pos:]))
    next(ops)
    following = next(ops, None)
    return following[2] if following is not None else len(data) - pos


def _pickle_int(value: int) -> bytes:
    if -(1 << 31) <= value < (1 << 31):
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


# -- JSON documents -----------------------------------------------------------------------------

class StoryTarget(Target):
    """Story files, native and Kobold Lite JSON, through the public `load_story`."""

    name = "story"
    filename = "story.json"
    json = True

    @property
    def errors(self):
        from app.story import StoryFormatError
        return (StoryFormatError,)

    def mutate(self, ch):
        seed_name, data = super().mutate(ch)
        if ch.chance(10):         # byte-level damage of the whole file, as a bad disk would do
            data = mutate_bytes(ch, Seed(seed_name, data), max_steps=2)
        return seed_name, data

    def read(self, path, ch):
        from app.story import load_story
        return load_story(path)

    def use(self, story, path, ch):
        import app.story as s
        native = s.story_bytes(story)
        again = s.Story.from_json(json.loads(native))
        assert s.story_bytes(again) == native, "a saved story does not load back the same"
        json.loads(s.kobold_bytes(story))
        story.to_markdown()
        story.to_plain_text()


class AutosaveTarget(Target):
    """The crash-recovery autosave: a broken one is ignored, a good one is offered back."""

    name = "autosave"
    filename = "story.json"
    json = True
    errors = ()

    def read(self, path, ch):
        from app.autosave import find_recovery
        return find_recovery(path)

    def use(self, recovery, path, ch):
        if recovery is not None:
            recovery.describe()
            json.loads(__import__("app.story", fromlist=["story_bytes"]).story_bytes(recovery.story))


class ManifestTarget(Target):
    """The installed-models manifest: unreadable ones are moved aside, never fatal."""

    name = "manifest"
    filename = "manifest.json"
    json = True
    errors = ()

    def prepare(self, workdir, data):
        for old in workdir.glob("manifest.json*"):
            old.unlink()
        return super().prepare(workdir, data)

    def read(self, path, ch):
        from app.models.manifest import Manifest
        return Manifest.load(path)

    def use(self, manifest, path, ch):
        from dataclasses import fields
        from app.models.manifest import FIELD_CHECKS, InstalledModel, Manifest
        for record in manifest.models.values():
            for f in fields(InstalledModel):
                assert FIELD_CHECKS[f.type](getattr(record, f.name)), (f.name, getattr(record, f.name))
            assert manifest.file_path(record).parent == manifest.path.parent
        manifest.save()
        again = Manifest.load(manifest.path)
        assert again.models == manifest.models and not again.warnings


class CatalogTarget(Target):
    """The shipped catalog (a malformed one is a CatalogError) with its hub cache laid over it."""

    name = "catalog"
    filename = "catalog.json"
    json = True

    @property
    def errors(self):
        from app.models.catalog import CatalogError
        return (CatalogError,)

    def read(self, path, ch):
        from app.models.catalog import Catalog
        return Catalog.load(shipped=path, cache=path.with_name("no-cache.json"))

    def use(self, catalog, path, ch):
        from app.models.hub import Hub
        from app.models.connection import HttpClient
        hub = Hub(HttpClient("http://127.0.0.1:9"))
        for entry in catalog:
            json.dumps(entry.to_dict(), allow_nan=False)
            entry.url(hub)
            catalog.get(entry.id)


class CatalogCacheTarget(CatalogTarget):
    """The hub listings cached in the user folder: a damaged cache is simply empty, never an error."""

    name = "catalog-cache"
    filename = "catalog-hub.json"
    errors = ()

    def read(self, path, ch):
        from app.models.catalog import Catalog
        return Catalog.load(shipped=CORPUS / "catalog" / "catalog.json", cache=path)


class SettingsTarget(Target):
    """The app's settings file: whatever it holds, the app starts, each setting either as written
    or at its default, never a value the widgets that show it cannot take."""

    name = "settings"
    filename = "settings.json"
    json = True
    errors = ()

    def read(self, path, ch):
        from app.settings import Settings
        return Settings.load(path)

    def use(self, settings, path, ch):
        from app.recent import recent_stories, remember, startup_story
        from app.settings import DEFAULTS, RANGES, Settings
        for key, default in DEFAULTS.items():
            value = settings.get(key)
            assert type(value) is type(default), (key, value)
            if key in RANGES:
                assert RANGES[key][0] <= value <= RANGES[key][1], (key, value)
        for name, values in settings.get("user_presets").items():
            assert isinstance(name, str) and isinstance(values, dict), (name, values)
        recent_stories(settings)
        startup_story(settings)
        remember(settings, str(path))
        again = Settings.load(_write(path, settings.to_bytes()))
        assert again.values == settings.values, "the settings do not load back the same"


class TokenizerTarget(Target):
    """A model's tokenizer.json, read by the tokenizers library (engine/tokenizer.py): it loads
    and tokenizes, or is refused with a ValueError naming the file."""

    name = "tokenizer-json"
    filename = "tokenizer.json"
    json = True
    errors = (ValueError,)

    def read(self, path, ch):
        from engine.tokenizer import HFTokenizer
        return HFTokenizer.from_file(path)

    def use(self, tokenizer, path, ch):
        text = "Once upon a time, \u00e9t\u00e9 \U0001F600 <|endoftext|>\n\ttabs"
        ids = tokenizer.encode(text)
        assert all(0 <= i < tokenizer.n_vocab for i in ids), ids
        tokenizer.decode(ids)
        for i in ids:
            tokenizer.token_bytes(i)


class HFFolderTarget(ModelFileTarget):
    """A Hugging Face model folder (engine/convert.py): config.json mutated beside intact
    weights and tokenizer. The app's checks (hf_checkpoint.check_config, the size estimates) and
    the converter read it; a folder they accept converts to a ggml file that loads and runs."""

    name = "hf-folder"
    filename = "config.json"
    json = True
    FOLDER = CORPUS.parents[1] / "fixtures" / "tiny-parallel"       # weights + tokenizer, intact

    @property
    def errors(self):
        from app.models.hf_checkpoint import CheckpointError
        from engine.errors import ModelFormatError
        return (ModelFormatError, CheckpointError)

    def prepare(self, workdir, data):
        for name in ("model.safetensors", "tokenizer.json"):
            if not (workdir / name).exists():
                shutil.copy(self.FOLDER / name, workdir / name)
        for old in workdir.glob("out.bin*"):
            old.unlink()
        return super().prepare(workdir, data)

    def read(self, path, ch):
        from app.models.hf_checkpoint import check_config, count_params
        from engine.convert import CheckpointWeights, NeoXConfig, map_tensor_names
        config = NeoXConfig.from_file(path)
        raw = json.loads(path.read_text(encoding="utf-8"))
        check_config(raw, "fuzz/model", "main")
        count_params(raw)
        weights = CheckpointWeights(path.parent)
        map_tensor_names(config, weights)
        return config

    def use(self, config, path, ch):
        from engine.convert import convert_hf
        from engine.ggml_file import GGMLFile
        from engine.model import Model
        out = path.parent / "out.bin"
        convert_hf(path.parent, out, ch.pick(["f32", "f16", "q8_0", "q4_0"]))
        f = GGMLFile(out)
        try:
            model = Model(f, backend="reference")
            session = model.new_session(min(model.config.n_ctx, 8))
            logits = session.eval([0, model.config.n_vocab - 1])
            assert logits.shape == (model.config.n_vocab,) and np.isfinite(logits).all()
        finally:
            f.close()


def _write(path: Path, data: bytes) -> Path:
    again = path.with_name(path.name + ".again")
    again.write_bytes(data)
    return again


MODEL_TARGETS = (GGMLTarget, GGUFTarget, SafetensorsTarget, SafetensorsIndexTarget, TorchPickleTarget,
                 HFFolderTarget)
DOCUMENT_TARGETS = (StoryTarget, AutosaveTarget, ManifestTarget, CatalogTarget, CatalogCacheTarget, SettingsTarget,
                    TokenizerTarget)
ALL_TARGETS = {t.name: t for t in MODEL_TARGETS + DOCUMENT_TARGETS}
