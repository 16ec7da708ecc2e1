"""Every reader bug the fuzzer (tests/fuzz) found, each as a small input that showed it.

Before the fixes each of these raised something other than the reader's own error (SystemError
from the compiled forward pass, RecursionError, BadZipFile, OSError, TypeError, OverflowError,
UnicodeEncodeError...) or allocated from a size the file claimed.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.errors import ModelFormatError
from engine.ggml_file import GGMLFile, WEIGHT_LIMIT
from engine.ggml_writer import write_ggml
from engine.safetensors_file import open_safetensors
from engine.torch_pickle import load_torch_state_dict
from modelgen import DEFAULT_HPARAMS, random_tensors, random_vocab
from test_torch_pickle import tensor_pickle, write_archive

DEEP_JSON = "[" * 100_000 + "]" * 100_000
FIXTURES = Path(__file__).resolve().parent / "fixtures"


# -- legacy ggml: a weight that makes the compiled forward pass divide by zero ------------------

def model_with(tmp_path, name: str, value: float, ftype="f32", qnt_version=0):
    """A small model whose tensor `name` holds `value` at its first element."""
    tensors = random_tensors(DEFAULT_HPARAMS, seed=3)
    tensors[name].reshape(-1)[0] = value
    path = tmp_path / f"m-{ftype}.bin"
    write_ggml(path, DEFAULT_HPARAMS, random_vocab(DEFAULT_HPARAMS["n_vocab"]), tensors, ftype=ftype,
               qnt_version=qnt_version)
    return path


@pytest.mark.parametrize("value", [3.4e38, math.inf, -math.inf, math.nan, 65505.0])
def test_a_weight_beyond_the_fp16_range_is_refused_naming_the_tensor(tmp_path, value):
    # the fuzzer's file: a qkv bias of 3.4e38 (finite!) made every attention score -inf, the softmax
    # sum 0, and forward_token raised SystemError around a ZeroDivisionError
    path = model_with(tmp_path, "gpt_neox.layers.0.attention.query_key_value.bias", value)
    with pytest.raises(ModelFormatError, match=r"'gpt_neox.layers.0.attention.query_key_value.bias' \(f32\) "
                                               r"holds a value of .* at byte 0 of its data.*fp16 range"):
        engine.load_model(path)


@pytest.mark.parametrize("ftype, qnt_version, scale_bytes", [
    ("f16", 0, None), ("q4_0", 0, "<f"), ("q4_0", 2, "<e"), ("q4_1", 1, "<f"), ("q5_1", 0, "<e"), ("q8_0", 2, "<e"),
])
def test_an_inf_weight_or_block_scale_is_refused_in_every_type(tmp_path, ftype, qnt_version, scale_bytes):
    path = model_with(tmp_path, "gpt_neox.layers.0.attention.dense.weight", 0.5, ftype, qnt_version)
    f = GGMLFile(path)
    offset = f.tensors["gpt_neox.layers.0.attention.dense.weight"].offset
    f.close()
    data = bytearray(path.read_bytes())
    data[offset:offset + (2 if scale_bytes in (None, "<e") else 4)] = struct.pack(scale_bytes or "<e", math.inf)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="attention.dense.weight"):
        GGMLFile(path)


def test_a_quantized_min_that_pushes_values_past_the_limit_is_refused(tmp_path):
    path = model_with(tmp_path, "embed_out.weight", 0.5, "q4_1", 2)
    f = GGMLFile(path)
    offset = f.tensors["embed_out.weight"].offset + 18 * 20       # block 9's min (q4_1 v2: d, m, 16 bytes)
    f.close()
    data = bytearray(path.read_bytes())
    data[offset + 2:offset + 4] = struct.pack("<e", 65000.0)       # finite, but d*15 + m > 65504
    data[offset:offset + 2] = struct.pack("<e", 100.0)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="'embed_out.weight' \\(q4_1\\)"):
        GGMLFile(path)


def test_the_largest_weights_allowed_survive_a_forward_pass(tmp_path):
    """The limit is the guarantee: weights anywhere within +-65504 never make a kernel fail."""
    tensors = random_tensors(DEFAULT_HPARAMS, seed=4)
    for name, t in tensors.items():
        t[...] = np.sign(t) * np.float32(WEIGHT_LIMIT)
        if name.endswith("query_key_value.bias"):
            t[...] = -WEIGHT_LIMIT                                # the scores as negative as they get
    path = tmp_path / "extreme.bin"
    write_ggml(path, DEFAULT_HPARAMS, random_vocab(DEFAULT_HPARAMS["n_vocab"]), tensors, ftype="f16")
    model = engine.load_model(path, backend="fast")
    session = model.new_session(8)
    assert session.eval([1, 2, 3], all_logits=True).shape == (3, DEFAULT_HPARAMS["n_vocab"])
    assert session.eval([4]).shape == (DEFAULT_HPARAMS["n_vocab"],)    # one token: forward_token
    model.close()


# -- safetensors --------------------------------------------------------------------------------

def safetensors_file(path, header_text: str, data: bytes = b""):
    raw = header_text.encode("utf-8", "surrogatepass")
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize("header, message", [
    (DEEP_JSON, "nested too deeply"),                                               # RecursionError
    ('{"t": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}', "unknown dtype"),   # TypeError
    ('{"t": {"dtype": "F32", "shape": [0, %d], "data_offsets": [0, 0]}}' % 2 ** 70, "shape"),   # numpy ValueError
    ('{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, %s]}}' % ("9" * 4000), "data_offsets"),  # printing it
    ('{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, %s]}}' % ("9" * 5000), "not valid"),  # parsing it
])
def test_damaged_safetensors_headers_are_refused(tmp_path, header, message):
    with pytest.raises(ModelFormatError, match=message):
        open_safetensors(safetensors_file(tmp_path / "m.safetensors", header, b"\0" * 4))


@pytest.mark.parametrize("shard", ["", "..", "a\0b", "\ud800.safetensors"])
def test_an_index_naming_no_proper_shard_is_refused(tmp_path, shard):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"t": shard}}), encoding="utf-8")
    with pytest.raises(ModelFormatError):
        open_safetensors(index)


def test_a_deeply_nested_index_is_refused(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(DEEP_JSON)
    with pytest.raises(ModelFormatError, match="nested too deeply"):
        open_safetensors(index)


# -- torch pickles ------------------------------------------------------------------------------

def one_tensor_archive(tmp_path, size=(2,), stride=(1,), stype="FloatStorage"):
    """An archive of one tensor over an 8-byte storage."""
    numel = 4 if stype == "BFloat16Storage" else 2
    return write_archive(tmp_path / "m.bin", tensor_pickle({"t": (stype, "0", numel, 0, size, stride)}),
                         [("0", b"\0" * 8)])


def test_a_damaged_member_is_the_readers_error(tmp_path):
    data = bytearray(one_tensor_archive(tmp_path).read_bytes())
    data[data.find(b"collections") + 2] ^= 0xFF          # CRC no longer matches: zipfile.BadZipFile
    (tmp_path / "crc.bin").write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="damaged archive member"):
        load_torch_state_dict(tmp_path / "crc.bin")


def test_a_member_name_that_is_not_utf8_or_a_negative_offset_is_refused(tmp_path):
    data = one_tensor_archive(tmp_path).read_bytes()
    central = data.rfind(b"PK\x01\x02")                  # the central entry of the last member
    flags_at, name_at, offset_at = central + 8, central + 46, central + 42
    bad_name = bytearray(data)
    bad_name[flags_at:flags_at + 2] = struct.pack("<H", 0x800)  # "names are UTF-8"...
    bad_name[name_at] = 0xE5                                    # ...but this is not
    negative = bytearray(data)
    eocd = data.rfind(b"PK\x05\x06")
    negative[eocd + 16:eocd + 20] = struct.pack("<I", struct.unpack_from("<I", data, eocd + 16)[0] + 50)
    for i, damaged in enumerate((bad_name, negative)):
        path = tmp_path / f"bad{i}.bin"
        path.write_bytes(bytes(damaged))
        with pytest.raises(ModelFormatError):
            load_torch_state_dict(path)


@pytest.mark.parametrize("member", ["archive/byteorder", "archive/data.pkl"])
@pytest.mark.parametrize("compressed", [1 << 30, 200])
def test_a_compressed_size_the_member_cannot_have_is_refused_before_reading_it(tmp_path, member, compressed):
    # the fuzzer's file: byteorder's central record claimed 1 GiB compressed for 6 bytes, and
    # zipfile allocated the 1 GiB to read the stored member into
    data = bytearray(one_tensor_archive(tmp_path).read_bytes())
    central = data.find(b"PK\x01\x02")              # the member's central record: the name at +46
    while data[central + 46:central + 46 + len(member)] != member.encode():
        central = data.find(b"PK\x01\x02", central + 4)
    data[central + 20:central + 24] = struct.pack("<I", compressed)
    path = tmp_path / "sizes.bin"
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match=f"{member}: compressed size {compressed} does not fit"):
            load_torch_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def rezip_with_pickle(src, dst, pickle_bytes: bytes):
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for info in z.infolist():
            out.writestr(info.filename, pickle_bytes if info.filename.endswith("data.pkl") else z.read(info))
    return dst


@pytest.mark.parametrize("opcode", [
    pickle.BINBYTES8 + struct.pack("<Q", 8_189_235_493_671_214_705),     # MemoryError before
    pickle.BINBYTES + struct.pack("<I", 3_392_296_302),                  # 3.2 GiB allocated before
    pickle.EMPTY_DICT + pickle.LONG_BINPUT + struct.pack("<I", 40_388_465),   # a 600 MiB memo table
])
def test_pickle_lengths_and_memo_indices_are_checked_before_anything_is_allocated(tmp_path, opcode):
    src = one_tensor_archive(tmp_path)
    path = rezip_with_pickle(src, tmp_path / "big.bin", pickle.PROTO + b"\x04" + opcode + pickle.STOP)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match="damaged pickle"):
            load_torch_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_a_view_with_more_elements_than_the_archive_has_bytes_is_refused(tmp_path):
    # stride 0 repeats one element: bounds-checked, yet copying it would allocate 2^40 floats
    path = one_tensor_archive(tmp_path, size=(1 << 20, 1 << 20), stride=(0, 0), stype="BFloat16Storage")
    with pytest.raises(ModelFormatError, match="more than the .*-byte archive could hold"):
        load_torch_state_dict(path)
    path = one_tensor_archive(tmp_path, size=(1, 2), stride=(0, 1))      # expand((1, -1)) as torch saves it
    assert load_torch_state_dict(path)["t"].shape == (1, 2)


@pytest.mark.parametrize("size, stride", [((1, 2), (1 << 62, 1)), ((0, 1 << 62), (1, 1))])
def test_a_stride_or_dimension_past_the_archive_is_refused(tmp_path, size, stride):
    # a size-1 dimension's stride never moves the view, so the bounds check passed it and numpy's
    # byte strides overflowed a C long (fuzz finding: OverflowError); an empty view's other
    # dimensions went to np.zeros unchecked
    path = one_tensor_archive(tmp_path, size=size, stride=stride)
    with pytest.raises(ModelFormatError, match="dimension or stride larger than"):
        load_torch_state_dict(path)


# -- the manifest, the catalog and its cache ------------------------------------------------------

@pytest.mark.parametrize("record", [
    {"origin": 0}, {"size": "12"}, {"size": -1}, {"tokenizer": math.nan}, {"id": 7}, {"source_sha256": {"a": 1}},
    {"file": "../../home/user/thesis.odt"}, {"file": "/etc/passwd"},    # `remove` would delete them
])
def test_a_manifest_record_of_the_wrong_types_makes_it_unreadable_and_moved_aside(tmp_path, record):
    from app.models.manifest import Manifest
    good = {"id": "m", "file": "m.bin", "sha256": "a" * 64, "size": 1, "origin": "import", "source": "/x",
            "verified_against": "nothing"}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": 1, "models": [dict(good, **record)]}))
    manifest = Manifest.load(path)
    assert manifest.models == {} and "could not be read" in manifest.warnings[0]
    assert len(list(tmp_path.glob("manifest.json.unreadable-*"))) == 1       # kept, not lost


def test_every_manifest_field_has_a_type_check():
    from dataclasses import fields
    from app.models.manifest import FIELD_CHECKS, InstalledModel
    assert {f.type for f in fields(InstalledModel)} <= set(FIELD_CHECKS)


def test_a_deeply_nested_manifest_is_moved_aside(tmp_path):
    from app.models.manifest import Manifest
    (tmp_path / "manifest.json").write_text(DEEP_JSON)
    assert Manifest.load(tmp_path / "manifest.json").warnings


@pytest.mark.parametrize("listing", [
    {"files": {"x": {"size": math.nan}}}, {"files": {"x": {"size": "1"}}}, {"files": {"x": {"sha256": 5}}},
    {"files": 5}, [], "text", {"files": {"x": [1]}},
])
def test_a_damaged_catalog_cache_is_ignored(tmp_path, listing):
    from app.models.catalog import SHIPPED_CATALOG, Catalog
    doc = json.loads(SHIPPED_CATALOG.read_text())
    cache = tmp_path / "catalog-hub.json"
    entry = doc["entries"][0]
    if isinstance(listing, dict) and isinstance(listing.get("files"), dict):
        listing = {"files": {entry["path"]: v for v in listing["files"].values()}}
    cache.write_text(json.dumps({"listings": {f"{entry['repo']}@{entry['revision']}": listing}}))
    catalog = Catalog.load(cache=cache)
    first = catalog.get(entry["id"])
    assert first.size is None and first.facts_from == "shipped"
    json.dumps([e.to_dict() for e in catalog], allow_nan=False)
    cache.write_text(DEEP_JSON)
    assert len(Catalog.load(cache=cache)) == len(catalog)


@pytest.mark.parametrize("damage", [
    lambda doc: doc["entries"][0].update(id=7), lambda doc: doc["entries"][0].update(path="\ud800"),
    lambda doc: doc["entries"][0].update(qnt_version=math.inf), lambda doc: doc["models"]["pythia-70m-deduped"].update(n_embd=math.inf),
    lambda doc: doc["discover"][0].update(folder=3), lambda doc: doc.clear() or doc.update(entries=[]),
])
def test_a_damaged_shipped_catalog_is_a_catalog_error(tmp_path, damage):
    from app.models.catalog import SHIPPED_CATALOG, Catalog, CatalogError
    doc = json.loads(SHIPPED_CATALOG.read_text())
    damage(doc)
    shipped = tmp_path / "catalog.json"
    shipped.write_text(json.dumps(doc), encoding="utf-8", errors="surrogatepass")
    with pytest.raises(CatalogError):
        Catalog.load(shipped, cache=tmp_path / "none.json")
    shipped.write_text(DEEP_JSON)
    with pytest.raises(CatalogError, match="nested too deeply"):
        Catalog.load(shipped, cache=tmp_path / "none.json")


# -- the autosave ------------------------------------------------------------------------------

@pytest.mark.parametrize("saved_at", ["1e400", "NaN", "-5", "99999999999999", "true"])
def test_an_autosave_with_an_impossible_time_is_still_recovered(tmp_path, saved_at):
    from app.autosave import find_recovery
    path = tmp_path / "story.json"
    path.write_text('{"format": "neox-writer-autosave", "version": 1, "saved_at": %s, "story_path": null, '
                    '"story": {"format": "neox-writer-story", "version": 1, "text": "Hello"}}' % saved_at)
    recovery = find_recovery(path)
    assert recovery.story.text == "Hello" and recovery.saved_at == os.path.getmtime(path)
    assert "Recover" in recovery.describe()
    path.write_text(DEEP_JSON)
    assert find_recovery(path) is None


# -- stories --------------------------------------------------------------------------------------

def load_text(tmp_path, text: str):
    from app.story import load_story
    path = tmp_path / "story.json"
    path.write_text(text, encoding="utf-8")
    return load_story(path)


def saves_and_loads_back(story):
    from app.story import Story, kobold_bytes, story_bytes
    native = story_bytes(story)
    assert story_bytes(Story.from_json(json.loads(native))) == native
    json.loads(kobold_bytes(story))


@pytest.mark.parametrize("text, message", [
    (DEEP_JSON, "nested too deeply"),                                           # RecursionError
    ('{"prompt": "a", "anotestr": %s}' % ("9" * 5000), "not valid JSON"),      # ValueError, not a StoryFormatError
])
def test_story_files_json_cannot_parse_are_the_readers_error(tmp_path, text, message):
    from app.story import StoryFormatError
    with pytest.raises(StoryFormatError, match=message):
        load_text(tmp_path, text)


@pytest.mark.parametrize("anotestr", ["1" + "0" * 400, "1e400", '"1e999"', "536870912"])
def test_a_kobold_authors_note_depth_beyond_reason_is_clamped(tmp_path, anotestr):
    # before: OverflowError (a huge int divided, round(inf)), or a depth the native reader then refused
    story = load_text(tmp_path, '{"prompt": "Once", "anotestr": %s}' % anotestr)
    assert 1 <= story.authors_note_depth <= 1_000_000 or anotestr in ("1e400", '"1e999"')
    saves_and_loads_back(story)


def test_huge_kobold_settings_do_not_overflow(tmp_path):
    # math.isfinite(10**30 ... 10**400) raised OverflowError; such settings are dropped
    story = load_text(tmp_path, '{"prompt": "Once", "savedsettings": {"top_k": 0, "typ_s": 1%s, "temperature": 1%s}}'
                      % ("0" * 30, "0" * 400))
    assert story.sampler == {"top_k": 0}
    saves_and_loads_back(story)


def test_kept_kobold_fields_of_the_wrong_type_do_not_break_the_export(tmp_path):
    # an imported Lite save's "savedsettings" is kept as it was; a non-object broke to_kobold()
    for saved in ("5", "true", "[1]", '"x"'):
        story = load_text(tmp_path, '{"format": "neox-writer-story", "version": 1, "kobold_lite": {"savedsettings": %s}}'
                          % saved)
        saves_and_loads_back(story)
        story = load_text(tmp_path, '{"prompt": "a", "savedsettings": %s}' % saved)
        saves_and_loads_back(story)


def test_unusable_sampler_settings_of_a_native_story_are_dropped(tmp_path):
    story = load_text(tmp_path, json.dumps({
        "format": "neox-writer-story", "version": 1, "text": "Hi",
        "sampler": {"temperature": 0.7, "top_k": 1e400, "order": [1, []], "banned_phrases": [3], "logit_bias": [],
                    "typical": {"a": 1}, "seed": 2 ** 70, "min_p": None, "dry_sequence_breakers": ["\n"]}},
        allow_nan=True).replace("1e+400", "1e400"))
    assert story.sampler == {"temperature": 0.7, "dry_sequence_breakers": ["\n"]}
    saves_and_loads_back(story)


def test_a_lone_surrogate_becomes_a_replacement_character_so_the_story_saves_again(tmp_path):
    # JSON (and JavaScript, so Kobold Lite) allows "\ud800" alone; no UTF-8 file can hold it
    story = load_text(tmp_path, '{"prompt": "caf\\ud800e", "memory": "\\udc00", "actions": ["\\ud83d\\ude00 ok"],'
                                ' "worldinfo": [{"key": "\\uDBFF", "content": "x"}]}')
    assert story.text == "caf\ufffde\U0001F600 ok" and story.memory == "\ufffd"
    assert story.world_info[0].keys == ["\ufffd"]
    saves_and_loads_back(story)


# -- Hugging Face config.json (fuzz target "hf-folder") -----------------------------------------

@pytest.mark.parametrize("change, words", [
    ({"rotary_emb_base": 10 ** 400}, "rotary base"),          # OverflowError from float()
    ({"rotary_emb_base": "10000"}, "rotary base"),            # a string: ValueError/TypeError
    ({"num_hidden_layers": 2 ** 31}, "absurd"),               # a list of 2**31 * 12 tensor shapes: 9 GB
    ({"vocab_size": 2 ** 40}, "absurd"),
    ({"model_type": ["x"] * 1000}, "is not gpt_neox"),
    ({"layer_norm_eps": -10 ** 400}, "layer_norm_eps"),       # OverflowError from eps - 1e-5
    ({"layer_norm_eps": True}, "layer_norm_eps"),
    # converted, then refused by the ggml reader (n_rot must be even): rotary dimensions turn in pairs
    ({"rope_parameters": {"partial_rotary_factor": 0.1, "rope_theta": 10000, "rope_type": "default"}},
     r"rotary fraction 0.1 of the head size 16 gives an odd number of rotary dimensions \(1\)"),
    ({"rotary_pct": 3 / 16}, r"odd number of rotary dimensions \(3\)"),
    # converted and loaded, but no prompt token and the token after it fit in the context
    ({"max_position_embeddings": 1}, r"max_position_embeddings = 1 is too small \(at least 2\)"),
])
def test_a_config_json_beyond_reason_is_refused_by_name(tmp_path, change, words):
    from engine.convert import NeoXConfig
    config = json.loads((FIXTURES / "tiny-parallel" / "config.json").read_text())
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config, **change}))
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match=words):
            NeoXConfig.from_file(path)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 16 * 2 ** 20


def test_the_smallest_context_and_rotary_fraction_allowed_convert_and_run(tmp_path):
    import shutil
    from engine.convert import convert_hf
    config = json.loads((FIXTURES / "tiny-parallel" / "config.json").read_text())
    config.update(max_position_embeddings=2, rotary_pct=2 / 16)
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name in ("model.safetensors", "tokenizer.json"):
        shutil.copy(FIXTURES / "tiny-parallel" / name, tmp_path / name)
    convert_hf(tmp_path, tmp_path / "out.bin", "f32")
    model = engine.load_model(tmp_path / "out.bin", backend="reference")
    assert (model.config.n_ctx, model.config.n_rot) == (2, 2)
    assert np.isfinite(model.new_session(2).eval([0, model.config.n_vocab - 1])).all()
    model.close()


def test_a_config_json_nested_too_deeply_is_refused(tmp_path):
    from app.models.hf_checkpoint import CheckpointError, _read_json
    from engine.convert import NeoXConfig, _weight_map
    path = tmp_path / "config.json"
    path.write_text(DEEP_JSON)
    with pytest.raises(ModelFormatError, match="nested too deeply"):
        NeoXConfig.from_file(path)
    with pytest.raises(ModelFormatError, match="nested too deeply"):
        _weight_map(path)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        _read_json(path)


# -- the settings file (fuzz target "settings") ----------------------------------------------------

def test_settings_outside_what_the_widgets_take_fall_back_to_their_defaults(tmp_path):
    """A font size of 10**12 or an autosave interval past a QTimer's C int stopped the window
    from opening; numbers outside their range, paths that are not strings and presets that are
    not objects now read as the defaults."""
    from app.settings import DEFAULTS, Settings
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"font_size": 10 ** 12, "autosave_seconds": 2 ** 40, "server_port": 70000,
                                "threads": -3, "page_chars": 10 ** 30, "recent_stories": ["/a.json", 5],
                                "user_presets": {"x": 3}, "theme": "dark", "version": 0}))
    settings = Settings.load(path)
    for key in ("font_size", "autosave_seconds", "server_port", "threads", "page_chars", "recent_stories",
                "user_presets", "version"):
        assert settings.get(key) == DEFAULTS[key], key
    assert settings.get("theme") == "dark"
    path.write_text(DEEP_JSON)
    assert Settings.load(path).values == DEFAULTS


def test_the_sampling_panel_clamps_what_a_story_or_the_settings_hold(qtbot):
    """A story's sampler (int64 numbers are usable there) applied to the panel raised
    OverflowError from Qt's C int boxes: values are clamped to each row's range first."""
    from app.sampler_rows import MAX_SEED, SAMPLER_RANGES
    from app.widgets.samplingpanel import SamplingPanel
    panel = SamplingPanel()
    qtbot.addWidget(panel)
    panel.apply_values({"seed": 2 ** 40, "rep_pen_range": 2 ** 62, "temperature": 1e300, "top_k": -2 ** 62,
                        "max_new_tokens": -(2 ** 50), "min_p": float("nan")})
    values = panel.values()
    assert values["seed"] == MAX_SEED and values["rep_pen_range"] == SAMPLER_RANGES["rep_pen_range"][1]
    assert values["temperature"] == SAMPLER_RANGES["temperature"][1] and values["top_k"] == 0
    assert values["max_new_tokens"] == 1 and math.isfinite(values["min_p"])


@pytest.mark.parametrize("path", ["x" * 3000, "/home/" + "x" * 300 + "/a.json", "/a\0b.json", "/caf\ud800.json",
                                  "/" + "d/" * 2100 + "a.json"])
def test_a_path_setting_no_file_system_could_hold_reads_as_its_default(tmp_path, path):
    """A last story or recent story of thousands of characters was accepted and then made the
    start-up's Path.is_file raise OSError (File name too long)."""
    from app.recent import recent_stories, startup_story
    from app.settings import DEFAULTS, PATH_KEYS, Settings
    from app.window.application import startup_model
    good = str(tmp_path / "story.json")
    (tmp_path / "story.json").write_text("{}")
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps({**{key: path for key in PATH_KEYS}, "recent_stories": [good, path]}),
                             encoding="utf-8", errors="surrogatepass")
    settings = Settings.load(settings_file)
    for key in PATH_KEYS + ("recent_stories",):
        assert settings.get(key) == DEFAULTS[key], key
    assert recent_stories(settings) == [] and startup_story(settings) is None
    startup_model(settings)
    settings.set("recent_stories", [good, path])        # set by hand, the start-up still does not fail
    settings.set("last_story", path)
    assert recent_stories(settings) == [good] and startup_story(settings) is None


def test_a_long_but_possible_path_setting_is_kept(tmp_path):
    from app.settings import Settings
    path = "/" + "/".join(["x" * 255] * 15)
    (tmp_path / "settings.json").write_text(json.dumps({"last_story": path, "recent_stories": [path]}))
    settings = Settings.load(tmp_path / "settings.json")
    assert settings.get("last_story") == path and settings.get("recent_stories") == [path]


# -- tokenizer.json (fuzz target "tokenizer-json") --------------------------------------------------

def test_a_tokenizer_json_with_an_id_past_its_vocabulary_is_refused_naming_the_token(tmp_path):
    """The fuzzer's file gave "e" the id 2**31: the tokenizer loaded and encoded text to ids no
    model row or byte table holds."""
    from engine.tokenizer import HFTokenizer
    doc = json.loads((Path(__file__).parent / "fuzz" / "corpus" / "tokenizer-json" / "tokenizer.json").read_text())
    doc["model"]["vocab"]["e"] = 2 ** 31
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"token 'e' has id 2147483648, outside the 320 ids"):
        HFTokenizer.from_file(path)
    doc["added_tokens"][0]["id"] = doc["model"]["vocab"]["e"] = 320     # an added token past the end too
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"has id 320, outside the 320 ids"):
        HFTokenizer.from_file(path)


def test_a_gguf_tokenizer_with_gaps_in_its_ids_covers_every_id_to_the_last_used_one():
    """Unused and repeated token strings leave ids the tokenizers library does not count; the
    byte table still covers them (an id there read past its end before)."""
    from engine import gguf_constants as C
    from engine.gguf_tokenizer import EmbeddedTokenizer
    from engine.tokenizer import bytes_to_unicode
    alphabet = [bytes_to_unicode()[b] for b in range(256)]
    tokens = ["<|endoftext|>", "[PAD1]", *alphabet, "ab", "ab", "abc"]      # "ab" twice
    types = [C.TokenType.CONTROL, C.TokenType.UNUSED] + [C.TokenType.NORMAL] * (len(tokens) - 2)
    tok = EmbeddedTokenizer(C.TOKENIZER_MODEL_GPT2, tokens, [int(t) for t in types], ["a b", "ab c"], "test").build()
    assert tok.n_vocab == len(tokens)
    assert tok.encode("abc") == [len(tokens) - 1]
    assert [tok.token_bytes(i) for i in (1, len(tokens) - 2, len(tokens) - 1)] == [b"", b"", b"abc"]
