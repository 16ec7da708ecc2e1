"""The tokenizer in a GGUF file's metadata, rebuilt exactly: checked against the real GPT-NeoX-20B
tokenizer and its 100 test vectors in shared/reference (skipped where that folder is absent). The
GGUF metadata is made in the test from the reference tokenizer.json, the way llama.cpp's converter
makes it (`_set_vocab_gpt2`); nothing of the reference is copied into the project."""
from __future__ import annotations

import json

import pytest

from conftest import shared_dir
from engine import gguf_constants as C
from engine.gguf_tokenizer import EmbeddedTokenizer, token_roles, vocab_bytes
from engine.loaded import EMBEDDED_NOTE, open_model
from engine.tokenizer import HFTokenizer, RebuiltBPETokenizer
from ggufgen import write_gguf
from modelgen import random_tensors

REFERENCE = shared_dir() / "reference"
TOKENIZER_JSON = REFERENCE / "gpt-neox-20b-tokenizer.json"
VECTORS = REFERENCE / "gpt-neox-20b-tokenizer-test-vectors.txt"
PYTHIA_VOCAB = 50304            # the padded vocab of Pythia 70M..2.8B (rows of the embedding)
EXTRA_TEXTS = [
    "    indented code", "a  b", " " * 30, "Hello<|endoftext|>World", "<|padding|>", "naïve café",
    "e\u0301 (a combining accent, NFC makes it one character)", "\tdef f():\n        return 1",
    "🙂 日本語 한국어", "[PAD50300] is plain text", "it's 3.14159, isn't it?", "\n\n\n", "",
]

pytestmark = pytest.mark.skipif(not TOKENIZER_JSON.is_file(), reason="shared/reference is absent")


@pytest.fixture(scope="module")
def reference():
    return HFTokenizer.from_file(TOKENIZER_JSON)


@pytest.fixture(scope="module")
def converted():
    """(tokens, token_types, merges) as llama.cpp's converter writes them for Pythia."""
    doc = json.loads(TOKENIZER_JSON.read_text(encoding="utf-8"))
    added = {a["id"]: a for a in doc["added_tokens"]}
    by_id = {i: t for t, i in doc["model"]["vocab"].items()}
    by_id.update({i: a["content"] for i, a in added.items()})
    tokens, types = [], []
    for i in range(PYTHIA_VOCAB):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(C.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(C.TokenType.CONTROL if i in added and added[i]["special"]
                         else C.TokenType.USER_DEFINED if i in added else C.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in doc["model"]["merges"]]
    return tokens, [int(t) for t in types], merges


def vectors():
    for line in VECTORS.read_text(encoding="utf-8").splitlines():
        if " => " in line:
            text, ids = line.rsplit(" => ", 1)
            yield text, [int(i) for i in ids.split(",")]


def test_the_metadata_tokenizer_passes_the_100_test_vectors(converted, reference):
    tokens, types, merges = converted
    tok = EmbeddedTokenizer(C.TOKENIZER_MODEL_GPT2, tokens, types, merges, "test", bos_id=0, eos_id=0).build()
    cases = list(vectors())
    assert len(cases) == 100
    assert [tok.encode(text) for text, _ in cases] == [ids for _, ids in cases]
    for text in EXTRA_TEXTS:
        assert tok.encode(text) == reference.encode(text), text
    assert (tok.n_vocab, tok.eos_id, tok.approximate) == (50277, 0, False)
    assert all(tok.token_bytes(i) == reference.token_bytes(i) for i in range(PYTHIA_VOCAB))
    assert tok.decode(tok.encode("Hello World!")) == "Hello World!"


def test_older_converters_fillers_undefined_types_and_files_without_token_types(converted, reference):
    tokens, types, merges = converted
    old_types = [C.TokenType.USER_DEFINED if t == C.TokenType.UNUSED else t for t in types]
    undefined = [0 if t == C.TokenType.NORMAL else t for t in types]        # llama.cpp's UNDEFINED
    for token_types in (old_types, None, undefined):
        tok = EmbeddedTokenizer(C.TOKENIZER_MODEL_GPT2, tokens, token_types, merges, "test").build()
        for text in EXTRA_TEXTS + [text for text, _ in vectors()][:20]:
            assert tok.encode(text) == reference.encode(text), text
        assert tok.n_vocab == 50277


def test_roles_and_vocab_bytes(converted):
    tokens, types, merges = converted
    roles = token_roles(tokens, None)
    assert roles[0] == C.TokenType.CONTROL and roles[50276] == C.TokenType.USER_DEFINED
    assert roles[12092] == C.TokenType.NORMAL and roles[50300] == C.TokenType.UNUSED
    vocab = vocab_bytes(tokens, types)
    assert vocab[12092] == b"Hello"
    assert vocab[0] == b"<|endoftext|>" and vocab[50276] == b"  " and vocab[50300] == b""
    assert vocab[16922] == b" Alice"


def test_without_merges_the_bpe_is_rebuilt_and_other_models_are_refused(converted):
    tokens, types, merges = converted
    tok = EmbeddedTokenizer(C.TOKENIZER_MODEL_GPT2, tokens, types, None, "test").build()
    assert isinstance(tok, RebuiltBPETokenizer)
    assert tok.encode("Hello World!") == [12092, 3645, 2]
    with pytest.raises(ValueError, match="'llama'"):
        EmbeddedTokenizer("llama", tokens, types, merges, "test").build()
    broken = list(merges)
    broken[5] = "nosuchtoken alsonot"
    with pytest.raises(ValueError, match="unusable"):
        EmbeddedTokenizer(C.TOKENIZER_MODEL_GPT2, tokens, types, broken, "test").build()


def test_open_model_uses_the_metadata_and_a_tokenizer_json_beside_the_file_wins(tmp_path, converted):
    tokens, types, merges = converted
    hp = dict(n_vocab=PYTHIA_VOCAB, n_ctx=32, n_embd=32, n_head=2, n_layer=1, n_rot=4, par_res=1)
    path = tmp_path / "pythia.gguf"
    write_gguf(path, hp, random_tensors(hp, seed=2), weight_type="f16", tokens=tokens, token_types=types,
               merges=merges)
    loaded = open_model(path, backend="reference")
    try:
        assert loaded.tokenizer_path is None and loaded.tokenizer_note == EMBEDDED_NOTE
        assert not loaded.approximate
        text, ids = next(vectors())
        assert loaded.tokenizer.encode(text) == ids
        assert loaded.model.vocab[12092] == b"Hello"
    finally:
        loaded.close()
    (tmp_path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {
        "type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}}), encoding="utf-8")
    loaded = open_model(path, backend="reference")
    try:
        assert loaded.tokenizer_path == tmp_path / "tokenizer.json"
        assert loaded.tokenizer.encode("ab") == [0, 1]
    finally:
        loaded.close()
