"""Hugging Face checkpoint files built in memory for the fixture hub: revisions, shards, pickles.

Every checkpoint starts from the tiny-parallel golden fixture; `revision_tensors(seed)` gives
weights that differ per seed, so two revisions of one repository really hold different models.
"""
from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest

from conftest import FIXTURES_DIR
from http_fixture_server import HubFixture
from engine.safetensors_file import SafetensorsFile
from test_torch_pickle import tensor_pickle

TINY = FIXTURES_DIR / "tiny-parallel"
REPO = "EleutherAI/pythia-tiny"


def revision_tensors(seed: int) -> dict[str, np.ndarray]:
    """The tiny model's tensors (float32), nudged by seeded noise: one 'training step' per seed."""
    st = SafetensorsFile(TINY / "model.safetensors")
    rng = np.random.default_rng(seed)
    out = {}
    for name in st.names():
        base = np.array(st.array(name), dtype=np.float32)
        out[name] = base + np.float32(0.05) * rng.standard_normal(base.shape).astype(np.float32) * np.abs(base).mean()
    return out


def safetensors_bytes(tensors: dict[str, np.ndarray], dtype=np.float16) -> bytes:
    header, blobs, offset = {}, [], 0
    code = {np.float16: "F16", np.float32: "F32"}[dtype]
    for name, value in tensors.items():
        raw = np.ascontiguousarray(value, dtype=dtype).tobytes()
        header[name] = {"dtype": code, "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def bf16_bits(value: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (truncated: the top half of each float32)."""
    return (np.ascontiguousarray(value, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def torch_bin_bytes(tensors: dict[str, np.ndarray], bf16: bool = False) -> bytes:
    """A torch.save zip of float16 (or bfloat16) tensors, written by hand (no torch in the tests)."""
    spec, storages = {}, []
    for i, (name, value) in enumerate(tensors.items()):
        shape = tuple(value.shape)
        stride = tuple(int(np.prod(shape[k + 1:])) for k in range(len(shape)))
        spec[name] = ("BFloat16Storage" if bf16 else "HalfStorage", str(i), int(value.size), 0, shape, stride)
        raw = bf16_bits(value) if bf16 else np.ascontiguousarray(value, dtype=np.float16)
        storages.append((str(i), raw.tobytes()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", tensor_pickle(spec))
        z.writestr("archive/byteorder", "little")
        for key, raw in storages:
            z.writestr(f"archive/data/{key}", raw)
    return buffer.getvalue()


def shard(tensors: dict[str, np.ndarray], n: int, kind: str) -> dict[str, bytes]:
    """Split into n shards with the index transformers writes: {file name: bytes}."""
    names = list(tensors)
    prefix, ext = ("model", "safetensors") if kind == "safetensors" else ("pytorch_model", "bin")
    files, weight_map = {}, {}
    for k in range(n):
        part = {name: tensors[name] for name in names[k::n]}
        fname = f"{prefix}-{k + 1:05d}-of-{n:05d}.{ext}"
        files[fname] = safetensors_bytes(part) if kind == "safetensors" else torch_bin_bytes(part)
        weight_map.update({name: fname for name in part})
    index = {"metadata": {"total_size": sum(len(b) for b in files.values())}, "weight_map": weight_map}
    files[f"{prefix}.{ext}.index.json"] = json.dumps(index).encode()
    return files


def host_checkpoint(hub, repo: str, revision: str, tensors, layout: str = "safetensors", config: dict | None = None):
    """Put one revision on the fixture hub: config.json, tokenizer.json and the weights in `layout`
    ("safetensors", "bin", "bin-bf16", "sharded-safetensors", "sharded-bin")."""
    cfg = json.loads((TINY / "config.json").read_text())
    cfg.update(config or {})
    hub.add_file(repo, revision, "config.json", json.dumps(cfg).encode(), lfs=False)
    hub.add_file(repo, revision, "tokenizer.json", (TINY / "tokenizer.json").read_bytes(), lfs=False)
    if layout == "safetensors":
        files = {"model.safetensors": safetensors_bytes(tensors)}
    elif layout in ("bin", "bin-bf16"):
        files = {"pytorch_model.bin": torch_bin_bytes(tensors, bf16=layout == "bin-bf16")}
    else:
        files = shard(tensors, 3, layout.removeprefix("sharded-").replace("bin", "pytorch"))
    for name, data in files.items():
        hub.add_file(repo, revision, name, data, lfs=not name.endswith(".json"))
    return files


def local_revision(folder, seed: int, out_type: str = "f32"):
    """Convert one 'revision' of the tiny model without a hub: the model file, its tokenizer beside it."""
    import shutil

    from engine.convert import convert_hf
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(TINY / name, folder / name)
    (folder / "model.safetensors").write_bytes(safetensors_bytes(revision_tensors(seed)))
    out = folder / f"rev{seed}-{out_type}.bin"
    convert_hf(folder, out, out_type)
    return out


def host_test_repos(hub) -> None:
    """The repositories the add-hf tests use: two revisions and a tag of REPO, the sharded and
    pickled layouts of one model, and a Llama that must be refused."""
    host_checkpoint(hub, REPO, "step1000", revision_tensors(1))
    host_checkpoint(hub, REPO, "step2000", revision_tensors(2))
    host_checkpoint(hub, REPO, "step3000", revision_tensors(3))
    hub.add_tag(REPO, "v1.0", "step1000")
    host_checkpoint(hub, "test/neox-sharded-st", "main", revision_tensors(3), "sharded-safetensors")
    host_checkpoint(hub, "test/neox-sharded-bin", "main", revision_tensors(3), "sharded-bin")
    host_checkpoint(hub, "test/neox-bin", "main", revision_tensors(3), "bin")
    host_checkpoint(hub, "test/neox-bf16", "main", revision_tensors(3), "bin-bf16")
    host_checkpoint(hub, "test/llama", "main", revision_tensors(3),
                    config={"architectures": ["LlamaForCausalLM"], "model_type": "llama"})


@pytest.fixture
def hub():
    """The fixture hub serving the test repositories (tests import it by name to use it)."""
    with HubFixture() as server:
        host_test_repos(server)
        yield server
