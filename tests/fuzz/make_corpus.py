"""Writes the committed seed corpus of the fuzz harness (run once; the files are committed).

    python -m tests.fuzz.make_corpus

Every seed is small (the fuzzer runs each mutation through the reader and, for models, a
forward pass) and is written by the project's own writers, so the corpus follows the formats
as the program writes them: ggml files of every layout, era and type (engine.ggml_writer), GGUF
files of every type the engine runs (the gguf package's writer, until the project has its own),
safetensors files and a sharded index, the torch.save archive of the golden fixtures, native
and Kobold Lite stories (app.story), an autosave record, a manifest and the catalogs, the app's
settings file, a tokenizer.json and Hugging Face config.json files (both generations).
`tests/test_fuzz.py` checks that every seed loads as it is.
"""
from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "corpus"

# A tiny model: the rows of the q4_2/q4_3 (16) and other quantized (32) blocks, two heads.
HPARAMS = dict(n_vocab=20, n_ctx=8, n_embd=32, n_head=2, n_layer=1, n_rot=4, par_res=1)

# Single bytes and a few merges, so the BPE rebuilt from the vocab works (as for a real ggml file).
VOCAB = [b"<|endoftext|>", b" ", b"a", b"e", b"h", b"n", b"o", b"t", b"T", b".", b"\xc3", b"\xa9",
         b"th", b"the", b" t", b"on", b" the", b"\xc3\xa9", b"\n", b"\xef\xbf\xbd"]

# (layout, weight type, quantization version, era) of every variant published in 2023
GGML_VARIANTS = [
    ("gpt-neox", "f32", 0, None), ("gpt-neox", "f16", 0, None),
    ("stablelm", "f32", 0, None), ("stablelm", "f16", 0, None),
    ("stablelm", "q4_3", 0, "E1"), ("stablelm", "q4_2", 0, "E1"), ("stablelm", "q4_0", 0, "E1"),
    ("stablelm", "q4_1", 0, "E1"),
    ("stablelm", "q4_2", 0, "E3"), ("stablelm", "q4_0", 0, "E3"), ("stablelm", "q4_1", 0, "E3"),
    ("stablelm", "q5_0", 0, "E3"), ("stablelm", "q5_1", 0, "E3"), ("stablelm", "q8_0", 0, "E3"),
    ("gpt-neox", "q4_0", 0, None), ("gpt-neox", "q4_1", 0, None), ("gpt-neox", "q4_2", 0, None),
    ("gpt-neox", "q5_0", 0, None), ("gpt-neox", "q5_1", 0, None), ("gpt-neox", "q8_0", 0, None),
] + [("gpt-neox", t, v, None) for t in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0") for v in (1, 2)]


def write_ggml_seeds(folder: Path) -> None:
    from engine.ggml_writer import write_ggml
    from modelgen import random_tensors
    for i, (layout, wtype, version, era) in enumerate(GGML_VARIANTS):
        hp = dict(HPARAMS, par_res=i % 2)            # both residual kinds across the corpus
        name = "-".join(str(x) for x in (layout, wtype, f"v{version}", era) if x is not None) + ".bin"
        write_ggml(folder / name, hp, VOCAB, random_tensors(hp, seed=i), layout=layout, ftype=wtype,
                   qnt_version=version, era=era)


# GGUF seeds: the same tiny model in byte-level token strings, with merges so that the tokenizer
# from the metadata is a real BPE. (type, version, QKV order, marker): every type the engine runs,
# both versions, both orders; unmarked files go through the QKV order detection.
GGUF_VARIANTS = [
    ("f32", 3, "split", True), ("f16", 2, "split", True), ("bf16", 3, "interleaved", True),
    ("q4_0", 3, "split", False), ("q4_1", 3, "interleaved", False), ("q5_0", 2, "split", True),
    ("q5_1", 3, "split", True), ("q8_0", 3, "interleaved", True),
]
GGUF_MERGES = ["t h", "th e", "\u0120 t", "o n", "\u0120 the", "\u00c3 \u00a9"]


def write_gguf_seeds(folder: Path) -> None:
    """GGUF seeds, written with the gguf package's GGUFWriter (tests/ggufgen.py)."""
    from engine.gguf_constants import TokenType
    from engine.tokenizer import bytes_to_unicode
    from ggufgen import write_gguf
    from modelgen import random_tensors
    table = bytes_to_unicode()
    tokens = [VOCAB[0].decode()] + ["".join(table[b] for b in v) for v in VOCAB[1:]]
    types = [int(TokenType.CONTROL)] + [int(TokenType.NORMAL)] * (len(VOCAB) - 1)
    for i, (wtype, version, layout, marker) in enumerate(GGUF_VARIANTS):
        hp = dict(HPARAMS, par_res=i % 2)
        name = f"{wtype}-v{version}-{layout}{'' if marker else '-unmarked'}.gguf"
        write_gguf(folder / name, hp, random_tensors(hp, seed=100 + i), weight_type=wtype, version=version,
                   qkv_layout=layout, marker=marker, tokens=tokens, token_types=types, merges=GGUF_MERGES)


def safetensors_bytes(tensors: dict[str, tuple[str, np.ndarray]], metadata: dict | None = None) -> bytes:
    """A .safetensors file: name -> (dtype name, array of that dtype's bytes)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)                       # the writers pad the header to 8 bytes
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write_safetensors_seeds(folder: Path, index_folder: Path) -> None:
    rng = np.random.default_rng(5)
    f32 = lambda *shape: rng.standard_normal(shape).astype("<f4")   # noqa: E731
    model = {
        "gpt_neox.embed_in.weight": ("F32", f32(20, 8)),
        "gpt_neox.layers.0.attention.query_key_value.weight": ("F16", f32(24, 8).astype("<f2")),
        "gpt_neox.layers.0.attention.query_key_value.bias": ("BF16", (f32(24).view("<u4") >> 16).astype("<u2")),
        "gpt_neox.layers.0.attention.masked_bias": ("F32", np.array(-1e9, dtype="<f4")),
        "gpt_neox.layers.0.attention.bias": ("BOOL", np.tril(np.ones((4, 4), dtype=bool))),
        "gpt_neox.final_layer_norm.weight": ("F64", rng.standard_normal(8)),
        "position_ids": ("I64", np.arange(8, dtype="<i8")),
        "empty": ("F32", np.zeros((0, 8), dtype="<f4")),
    }
    (folder / "mixed.safetensors").write_bytes(safetensors_bytes(model, {"format": "pt"}))
    (folder / "plain.safetensors").write_bytes(safetensors_bytes({"embed_out.weight": ("F32", f32(4, 8))}))
    shards = {"model-00001-of-00002.safetensors": {"a.weight": ("F32", f32(4, 8)), "a.bias": ("F32", f32(4))},
              "model-00002-of-00002.safetensors": {"b.weight": ("F16", f32(2, 8).astype("<f2"))}}
    weight_map = {}
    for shard, tensors in shards.items():
        (index_folder / shard).write_bytes(safetensors_bytes(tensors))
        weight_map.update({name: shard for name in tensors})
    (index_folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 240}, "weight_map": weight_map}, indent=2) + "\n")


def write_story_seeds(folder: Path) -> None:
    from app.passages import Token
    from app.story import ChatTurn, Story, WorldInfoEntry, kobold_bytes, story_bytes
    story = Story(text="The lighthouse keeper woke at dawn.", title="Lighthouse", memory="A keeper alone on an island.",
                  authors_note="Keep it gentle.", authors_note_depth=40,
                  sampler={"temperature": 0.7, "top_p": 0.9, "top_k": 40}, stop_sequences=["\n\n", "THE END"],
                  model_id="pythia-70m-deduped-q5_1")
    story.world_info.append(WorldInfoEntry(["keeper", "lighthouse"], "The keeper is called Ada.", False, "who"))
    story.world_info.append(WorldInfoEntry([], "It is winter.", True, ""))
    root = story.tree.current
    first = story.add_generation(" The sea was calm,", seed=1234, model="pythia", tokens=[
        Token(" The", 510, 0.5), Token(" sea", 3150, 0.25), Token(" was", 369, 0.9), Token(" calm,", 11874, 0.01)])
    story.add_generation(" and the gulls were quiet.", seed=None)
    story.add_generation(" A storm was coming.", parent=root, go=False)          # a sibling branch
    story.branch_with_token(40, " wind", 5181, 0.125)                             # an alternative token
    story.checkpoint("generation")
    assert first.id != root
    (folder / "native-story.json").write_bytes(story_bytes(story))
    (folder / "kobold-lite.json").write_bytes(kobold_bytes(story))
    chat = Story(mode="chat", chat_template="chatml", user_name="Ann", bot_name="Ray", title="Chat")
    chat.chat_turns = [ChatTurn("user", "Hello there."), ChatTurn("bot", "Hi! How can I help?")]
    chat.chat_turns = [ChatTurn("user", "Hello there."), ChatTurn("bot", "Hello, Ann.")]     # a regenerated turn
    (folder / "native-chat.json").write_bytes(story_bytes(chat))
    # a version 1 file, as NeoX Writer wrote them before the tree (still opened, as one branch)
    (folder / "native-v1.json").write_text(json.dumps({
        "format": "neox-writer-story", "version": 1, "title": "Old", "text": "Once there was a fox. It ran.",
        "generations": [{"start": 21, "text": " It ran.", "seed": 7, "model": "pythia"}], "memory": "",
        "authors_note": "", "authors_note_depth": 80, "world_info": [], "sampler": {"temperature": 1.0},
        "stop_sequences": [], "model_id": "", "mode": "story",
        "chat": {"template": "", "user_name": "You", "bot_name": "Bot", "turns": [{"role": "user", "text": "hi"}]},
    }, indent=1))
    # KoboldAI United: actions nested with per-action metadata
    (folder / "koboldai-united.json").write_text(json.dumps({
        "prompt": "Once upon a time", "memory": "", "authorsnote": "", "anotestr": 320,
        "actions": {"action_count": 2, "actions": {"0": {"Selected Text": " there was a fox."},
                                                   "1": {"Selected Text": " It ran.", "Options": []}}},
        "worldinfo": [{"key": "fox, den", "content": "The fox is red.", "constant": False, "comment": ""}],
        "savedsettings": {"temperature": 0.8, "rep_pen": 1.1, "max_length": 80},
    }, indent=1))
    # KoboldAI client: actions as a dict of numbered strings
    (folder / "koboldai-client.json").write_text(json.dumps({
        "gamestarted": True, "prompt": "A quiet night.", "actions": {"0": " Rain fell.", "1": " Then silence."},
        "extrastopseq": "||$||###", "savedsettings": {"top_k": 0, "typ_s": 1.0},
    }, indent=1))


def write_autosave_seed(folder: Path) -> None:
    from app.autosave import autosave_bytes
    from app.story import Story
    story = Story(text="Unsaved", title="Draft")
    story.add_generation(" words, written just before the crash.", seed=3)
    record = json.loads(autosave_bytes(story, "/home/user/stories/draft.json"))
    record["saved_at"] = 1767225600.0            # a fixed time, so the corpus is the same on every run
    (folder / "story.json").write_text(json.dumps(record, ensure_ascii=False))


def write_manifest_seed(folder: Path) -> None:
    from app.models.manifest import InstalledModel, Manifest
    manifest = Manifest(folder / "manifest.json")
    manifest.models["pythia-70m-deduped-q5_1"] = InstalledModel(
        "pythia-70m-deduped-q5_1", "pythia-70m-deduped-q5_1.bin", "a" * 64, 56_000_000, "download",
        "https://huggingface.co/x/resolve/main/pythia-70m-deduped-q5_1.bin", "catalog", repo="x/y",
        revision="main", tokenizer="tokenizers/EleutherAI/pythia-70m-deduped/tokenizer.json",
        installed_at="2026-01-02T03:04:05Z")
    manifest.models["imported-1"] = InstalledModel("imported-1", "mine.bin", "b" * 64, 1234, "import",
                                                   "/home/user/mine.bin", "nothing to compare (import)",
                                                   path="/home/user/mine.bin", installed_at="2026-01-02T03:04:06Z")
    manifest.save()


def write_catalog_seeds(folder: Path, cache_folder: Path) -> None:
    from app.models.catalog import SHIPPED_CATALOG
    shutil.copy(SHIPPED_CATALOG, folder / "catalog.json")
    doc = json.loads(SHIPPED_CATALOG.read_text())
    listings = {}
    for e in doc["entries"][:3]:
        key = f"{e['repo']}@{e['revision']}"
        listings.setdefault(key, {"fetched_at": "2026-01-01T00:00:00Z", "endpoint": "https://huggingface.co",
                                  "files": {}})
        listings[key]["files"][e["path"]] = {"size": 123_456_789, "sha256": "c" * 64, "git_oid": "d" * 40}
    for d in doc.get("discover", [])[:1]:
        key = f"{d['repo']}@{d['revision']}"
        listings.setdefault(key, {"fetched_at": "2026-01-01T00:00:00Z", "endpoint": "https://huggingface.co",
                                  "files": {}})
        path = f"{d['folder'].rstrip('/')}/pythia-70m-deduped-{d['quants'][0]}.bin"
        listings[key]["files"][path] = {"size": 50_000_000, "sha256": "e" * 64, "git_oid": "f" * 40}
    for g in doc.get("gguf", [])[:2]:
        key = f"{g['repo']}@{g.get('revision', 'main')}"
        listings.setdefault(key, {"fetched_at": "2026-01-01T00:00:00Z", "endpoint": "https://huggingface.co",
                                  "files": {}})
        listings[key]["files"][g["file"]] = {"size": 49_300_000, "sha256": "a" * 64, "git_oid": "b" * 40}
    for g in doc.get("gguf_discover", [])[:1]:     # files only the listing names, one of a refused type
        key = f"{g['repo']}@{g.get('revision', 'main')}"
        listings.setdefault(key, {"fetched_at": "2026-01-01T00:00:00Z", "endpoint": "https://huggingface.co",
                                  "files": {}})
        for name in ("found.Q4_K_M.gguf", "found.i1-IQ3_M.gguf", "README.md"):
            listings[key]["files"][name] = {"size": 1000, "sha256": "9" * 64, "git_oid": "8" * 40}
    (cache_folder / "catalog-hub.json").write_text(json.dumps({"format": 1, "listings": listings}, indent=1,
                                                              sort_keys=True) + "\n")


def write_settings_seed(folder: Path) -> None:
    """Every setting away from its default, as a writer's settings file would be after a while."""
    from app.settings import Settings
    settings = Settings()
    for key, value in dict(
            window_geometry="AdnQywADAAAAAAAAAAAAAAAAA", window_state="AAAA/wAAAAD9AAAAAQ", last_model="pythia-70m",
            last_story_dir="/home/user/stories", sampler={"temperature": 0.8, "top_k": 40, "seed": 7,
                                                          "stop_sequence": ["\n\n"]},
            preset="Mine", user_presets={"Mine": {"temperature": 1.1, "rep_pen": 1.2}}, theme="dark", font_size=14,
            threads=2, mode="chat", autosave_seconds=60, server_enabled=True, server_port=5002,
            remote_url="http://127.0.0.1:5001", last_story="/home/user/stories/a.json",
            recent_stories=["/home/user/stories/a.json", "/home/user/stories/b.json"], story_font="sans",
            page_chars=90, hf_checkpoint_policy="keep").items():
        settings.set(key, value)
    (folder / "settings.json").write_bytes(settings.to_bytes())


def write_hf_folder_seeds(folder: Path) -> None:
    """config.json of both generations (transformers 4.x flat names, 5.x rope_parameters) for the
    fixture weights; the target copies those weights and the tokenizer beside each case."""
    for name in ("tiny-parallel", "tiny-oldnames"):        # (tiny-sequential has other shapes)
        shutil.copy(TESTS / "fixtures" / name / "config.json", folder / f"{name}.json")


def write_corpus(root: Path) -> None:
    """Write every seed below `root` (one folder per target)."""
    sys.path.insert(0, str(TESTS))
    folders = {name: root / name for name in ("ggml", "gguf", "safetensors", "safetensors-index", "torch-pickle",
                                              "story", "autosave", "manifest", "catalog", "catalog-cache", "settings",
                                              "tokenizer-json", "hf-folder")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    write_ggml_seeds(folders["ggml"])
    write_gguf_seeds(folders["gguf"])
    write_safetensors_seeds(folders["safetensors"], folders["safetensors-index"])
    shutil.copy(TESTS / "fixtures" / "torch_pickle" / "views.bin", folders["torch-pickle"] / "views.bin")
    write_story_seeds(folders["story"])
    write_autosave_seed(folders["autosave"])
    write_manifest_seed(folders["manifest"])
    write_catalog_seeds(folders["catalog"], folders["catalog-cache"])
    write_settings_seed(folders["settings"])
    shutil.copy(TESTS / "fixtures" / "tokenizer.json", folders["tokenizer-json"] / "tokenizer.json")
    write_hf_folder_seeds(folders["hf-folder"])


if __name__ == "__main__":
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    write_corpus(CORPUS)
    print(f"wrote {sum(1 for p in CORPUS.rglob('*') if p.is_file())} seeds to {CORPUS}")
