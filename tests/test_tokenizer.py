"""Tokenizers: exact ids with tokenizer.json, and the BPE rebuilt from a lossy ggml vocab
compared with the real tokenizer (GPT-NeoX-20B from shared/reference, skipped where absent;
the fixture tokenizer always)."""
from __future__ import annotations

import difflib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from conftest import FIXTURES_DIR, shared_dir
from engine.tokenizer import HFTokenizer, RebuiltBPETokenizer, load_tokenizer, repair_vocab

REFERENCE = shared_dir() / "reference"
NEOX_JSON = REFERENCE / "gpt-neox-20b-tokenizer.json"
NEOX_VECTORS = REFERENCE / "gpt-neox-20b-tokenizer-test-vectors.txt"
needs_reference = pytest.mark.skipif(not NEOX_JSON.is_file() or not NEOX_VECTORS.is_file(),
                                     reason=f"reference tokenizer not found under {REFERENCE}")
REPO = Path(__file__).resolve().parents[1]

# English prose (the target: identical ids), one paragraph per entry.
PROSE = [
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do: once or twice she had peeped into the book her sister was reading, but it had "
    "no pictures or conversations in it, \"and what is the use of a book,\" thought Alice, "
    "\"without pictures or conversations?\"",
    "Reimu Hakurei swept the shrine steps at dawn. Gensokyo was quiet; even the fairies hadn't "
    "woken yet. \"I'm telling you, Marisa, it's the third incident this month,\" she said, "
    "and she'd have said more if the wind hadn't taken her hat.",
    "They'll arrive at 7:45 p.m. on March 3rd, 2023 -- or so they've promised. The bill came to "
    "$1,234.56 (tax included), i.e. 12% more than last year's 1,102.00.",
    "Chapter 12\n\nThe  rain   kept    falling.\tShe waited.\n\n\n    \"Come in,\" he said,\n"
    "        without looking up from the ledger.",
    "def encode(text):\n    ids = []\n    for word in text.split():\n        ids.append(vocab[word])\n"
    "    return ids  # 30 spaces follow:                              end",
    "Zoë and Chloé met Renée at the café near the Champs-Élysées; François ordered a crème brûlée "
    "while Björn and Søren argued about naïve Ångström units.",
    "The Hakurei shrine maiden, the witch of the Forest of Magic, and the maid of the Scarlet Devil "
    "Mansion: three names every reader of Gensokyo's chronicles knows by heart.",
    "What? No! Really... you can't be serious!? She laughed -- a short, sharp sound -- and then, "
    "quite suddenly, she wasn't laughing at all.",
    "Mr. and Mrs. Dursley, of number four, Privet Drive, were proud to say that they were "
    "perfectly normal, thank you very much.",
    "   Leading spaces, trailing spaces   \n\n\t\tTabs and\r\nWindows line ends.  ",
    "<|endoftext|>A new story begins.<|endoftext|>",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered the rightful property of some one or other of "
    "their daughters.",
]
# Text that needs the partial-UTF-8 tokens the ggml vocab lost: the rebuilt tokenizer may differ.
HARD = [
    "Emoji: 😀🎉👍🏽 and a heart ❤️ in a sentence.",
    "漢字とひらがなとカタカナ。東方Project の幻想郷。",
    "한국어 문장도 있습니다.",
    "Curly quotes: ‘single’ and “double” — with an em dash… and ´accents´ Łódź.",
    "Ελληνικά και русский текст, עברית, العربية.",
]


def lossy_vocab(tok: RustTokenizer, n_rows: int, cleanup: bool) -> list[bytes]:
    """The strings the 2023 converter wrote: decode([i]) per id, "" for padding rows; with
    `cleanup`, transformers' clean_up_tokenization applied as it was by default then."""
    out = []
    for i in range(n_rows):
        if tok.id_to_token(i) is None:
            out.append(b"")
            continue
        s = tok.decode([i], skip_special_tokens=False)
        if cleanup:
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                s = s.replace(a, b)
        out.append(s.encode("utf-8"))
    return out


def is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_vectors() -> list[tuple[str, list[int]]]:
    lines = NEOX_VECTORS.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        text, sep, ids = line.rpartition(" => ")
        if sep:
            out.append((text, [int(x) for x in ids.split(",") if x.strip()]))
    return out


test_vectors.__test__ = False   # a helper, not a test


@pytest.fixture(scope="module")
def neox() -> HFTokenizer:
    return HFTokenizer.from_file(NEOX_JSON)


@pytest.fixture(scope="module")
def neox_rust() -> RustTokenizer:
    return RustTokenizer.from_file(str(NEOX_JSON))


@pytest.fixture(scope="module", params=["raw", "cleanup"])
def rebuilt(request, neox_rust) -> RebuiltBPETokenizer:
    return RebuiltBPETokenizer(lossy_vocab(neox_rust, 50304, request.param == "cleanup"))


def agreement(a_tok, b_tok, texts) -> tuple[int, int, int, int]:
    """(texts identical, texts, tokens of b that a reproduces in an aligned run, tokens of b)."""
    same_texts = same_tokens = n_tokens = 0
    for t in texts:
        a, b = a_tok.encode(t), b_tok.encode(t)
        same_texts += a == b
        same_tokens += sum(m.size for m in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
        n_tokens += len(b)
    return same_texts, len(texts), same_tokens, n_tokens


def assert_differences_need_lost_tokens(rebuilt, real, texts) -> None:
    """Where the rebuilt ids differ, the real encoding uses a token the ggml vocab lost
    (a partial UTF-8 fragment): the only difference the rebuild is allowed."""
    for t in texts:
        a, b = rebuilt.encode(t), real.encode(t)
        if a != b:
            lost = [i for i in b if not is_utf8(real.token_bytes(i))]
            assert lost, f"{t!r}: {a} != {b} without any lost token"
        assert rebuilt.decode(a) == t


# -- the exact tokenizer ---------------------------------------------------------------------
@needs_reference
def test_hf_ids_equal_the_100_reference_vectors(neox):
    vectors = test_vectors()
    assert len(vectors) == 100
    for text, ids in vectors:
        assert neox.encode(text) == ids, text


@needs_reference
@pytest.mark.parametrize("text, ids", [
    ("Hello", [12092]), ("Hello, I am", [12092, 13, 309, 717]), (" Alice", [16922]),
    (" Hakurei", [388, 518, 459, 74]), ("Gensokyo", [40, 561, 536, 11904]),
    ("    indented code", [50274, 527, 8006, 2127]),
    ("\tdef f():\n        return 1", [186, 1545, 269, 14850, 187, 50270, 2309, 337]),
    ("a  b", [66, 50276, 67]), ("Hello<|endoftext|>World", [12092, 0, 14947]),
    (" " * 30, [50254, 50272]),
])
def test_hf_known_encodings(neox, text, ids):
    assert neox.encode(text) == ids


@needs_reference
def test_hf_attributes_and_token_bytes(neox, neox_rust):
    assert (neox.n_vocab, neox.eos_id, neox.approximate) == (50277, 0, False)
    assert neox.token_bytes(0) == b"<|endoftext|>"
    assert neox.token_bytes(50276) == b"  "
    assert neox.token_bytes(16922) == b" Alice"
    assert neox.token_bytes(50277) == neox.token_bytes(50303) == b""     # padding rows
    with pytest.raises(ValueError, match="token id -1"):
        neox.token_bytes(-1)
    # Every id's bytes, decoded, are what the tokenizers library decodes for it.
    for i in range(0, 50277, 7):
        assert neox.decode([i]) == neox_rust.decode([i], skip_special_tokens=False)


@needs_reference
def test_hf_decode_equals_the_tokenizers_decode_on_valid_text(neox, neox_rust):
    for text in PROSE + HARD + [t for t, _ in test_vectors()]:
        ids = neox.encode(text)
        assert neox.decode(ids) == neox_rust.decode(ids, skip_special_tokens=False)
        assert neox.decode(ids) == text.replace("\r\n", "\r\n")    # NFC text round-trips


def test_missing_or_malformed_tokenizer_json_is_named(tmp_path):
    with pytest.raises(ValueError, match="nothere.json: tokenizer file not found"):
        HFTokenizer.from_file(tmp_path / "nothere.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not a usable tokenizer.json"):
        load_tokenizer(None, str(bad))


# -- the rebuilt tokenizer against GPT-NeoX-20B ------------------------------------------------
@needs_reference
def test_rebuilt_repairs_the_lossy_vocab(neox_rust, neox):
    for cleanup in (False, True):
        rep = repair_vocab(lossy_vocab(neox_rust, 50304, cleanup))
        assert rep.n_real == 50277 and rep.neox_like
        assert rep.repaired_bytes == 115
        assert rep.lost_fragments == 369 + 2        # + the two tokens whose real text is U+FFFD
        assert rep.space_runs == {n: 50276 - (n - 2) for n in range(2, 25)}
        assert rep.specials == {b"<|endoftext|>": 0, b"<|padding|>": 1}
        assert all(rep.token_bytes[i] == neox.token_bytes(i) for i in range(2, 245))
        assert rep.cleanup_variant == cleanup
        # id 964 is " ." in the real vocab; a cleanup file stored "." and it is restored.
        assert rep.token_bytes[964] == b" ."
        wrong = [i for i in range(50277) if rep.token_bytes[i] != neox.token_bytes(i)]
        lossy = [i for i in range(245, 50277) if not is_utf8(neox.token_bytes(i))]
        # Only the unrecoverable fragments stay wrong (plus, for cleanup: 2 swapped pairs, 1 lone).
        assert len(wrong) == len(lossy) + (5 if cleanup else 0) == (374 if cleanup else 369)


@needs_reference
def test_rebuilt_matches_the_reference_vectors(rebuilt):
    for text, ids in test_vectors():
        assert rebuilt.encode(text) == ids, text


@needs_reference
def test_rebuilt_matches_on_english_prose(rebuilt, neox):
    for text in PROSE:
        assert rebuilt.encode(text) == neox.encode(text), text
    assert rebuilt.encode(" Alice") == [16922]
    assert rebuilt.encode(" Hakurei") == [388, 518, 459, 74]


@needs_reference
def test_rebuilt_agreement_figures_and_round_trip(rebuilt, neox):
    texts = PROSE + HARD + [t for t, _ in test_vectors()]
    same, n, same_tok, n_tok = agreement(rebuilt, neox, texts)
    print(f"\nrebuilt vs real ({rebuilt.description[:60]}...): {same}/{n} texts identical "
          f"({100 * same / n:.1f}%), {same_tok}/{n_tok} tokens identical ({100 * same_tok / n_tok:.2f}%)")
    assert same >= len(texts) - len(HARD)
    assert_differences_need_lost_tokens(rebuilt, neox, texts)
    assert rebuilt.approximate and "approximate" in rebuilt.description
    for text in texts:   # falling back to single bytes still encodes the exact text
        ids = rebuilt.encode(text)
        assert all(i < rebuilt.n_vocab for i in ids)
        assert rebuilt.decode(ids) == text


@needs_reference
def test_rebuilt_attributes(rebuilt):
    assert (rebuilt.n_vocab, rebuilt.eos_id) == (50277, 0)
    assert rebuilt.token_bytes(50290) == b""         # padding row
    assert rebuilt.token_bytes(0) == b"<|endoftext|>"
    with pytest.raises(ValueError, match="token id 50304"):
        rebuilt.token_bytes(50304)


# -- the rebuilt tokenizer on vocabs trained by tokenizers' BpeTrainer -------------------------
def train(texts, vocab_size, full_alphabet=True) -> RustTokenizer:
    tok = RustTokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet() if full_alphabet else []
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=alphabet, show_progress=False))
    return tok


@pytest.mark.parametrize("cleanup", [False, True])
def test_rebuilt_from_the_fixture_tokenizer(cleanup):
    rust = RustTokenizer.from_file(str(FIXTURES_DIR / "tokenizer.json"))
    real = HFTokenizer(rust)
    rebuilt = RebuiltBPETokenizer(lossy_vocab(rust, rust.get_vocab_size() + 16, cleanup))
    assert rebuilt.n_vocab == real.n_vocab and rebuilt.eos_id == 0
    assert rebuilt._repair.repaired_bytes == 128
    assert_differences_need_lost_tokens(rebuilt, real, PROSE + HARD)
    english = [t for t in PROSE if t.isascii()]
    assert agreement(rebuilt, real, english)[0] == len(english)


def test_rebuilt_from_a_freshly_trained_vocab():
    real_rust = train(PROSE * 3, 700)
    real = HFTokenizer(real_rust)
    rebuilt = RebuiltBPETokenizer(lossy_vocab(real_rust, real.n_vocab, False))
    assert_differences_need_lost_tokens(rebuilt, real, PROSE + HARD)
    english = [t for t in PROSE if t.isascii()]
    assert agreement(rebuilt, real, english)[0] == len(english)


def test_rebuilt_from_a_vocab_without_the_full_byte_alphabet():
    """A trainer without initial_alphabet only has the bytes it saw; their position cannot be
    recovered, so text needing them is approximate, but ASCII prose is still exact."""
    texts = ["plain ascii words, nothing else " * 4, "Zoë café"]
    real_rust = train(texts, 300, full_alphabet=False)
    rebuilt = RebuiltBPETokenizer(lossy_vocab(real_rust, real_rust.get_vocab_size(), False))
    real = HFTokenizer(real_rust)
    assert rebuilt.encode(texts[0]) == real.encode(texts[0])
    assert rebuilt.approximate and "approximate" in rebuilt.description


def test_vocab_that_is_not_byte_level_bpe_is_refused():
    with pytest.raises(ValueError, match="m.bin: the stored vocabulary has no single-byte tokens"):
        load_tokenizer([f"<{i}>".encode() for i in range(96)], None, source="m.bin")


# -- the command line ---------------------------------------------------------------------------
def test_tokenize_command_with_tokenizer_json_and_file(tmp_path):
    src = tmp_path / "text.txt"
    src.write_text(PROSE[1], encoding="utf-8")
    tok_json = str(FIXTURES_DIR / "tokenizer.json")
    expected = HFTokenizer.from_file(tok_json).encode(PROSE[1])

    def tokenize(*args):
        return subprocess.run([sys.executable, "-m", "engine", "tokenize", *args], cwd=REPO,
                              capture_output=True, text=True)

    r = tokenize("--tokenizer", tok_json, PROSE[1], "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ids": expected}
    r = tokenize("--tokenizer", tok_json, "--file", str(src), "--json")
    assert json.loads(r.stdout) == {"ids": expected}
    r = tokenize("--tokenizer", tok_json, "--json")
    assert r.returncode == 2 and "TEXT" in r.stderr


def test_tokenize_command_with_a_model_file(tmp_path):
    from engine.ggml_writer import write_ggml
    from modelgen import DEFAULT_HPARAMS, random_tensors
    rust = RustTokenizer.from_file(str(FIXTURES_DIR / "tokenizer.json"))
    hp = dict(DEFAULT_HPARAMS, n_vocab=rust.get_vocab_size() + 8)
    model = tmp_path / "m.bin"
    write_ggml(model, hp, lossy_vocab(rust, hp["n_vocab"], False), random_tensors(hp), ftype=0)
    r = subprocess.run([sys.executable, "-m", "engine", "tokenize", str(model), PROSE[0], "--json"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ids"] == HFTokenizer(rust).encode(PROSE[0])


def test_long_words_merge_like_short_ones():
    """The heap merge used for long pre-tokens gives the same parts as the rescanning loop."""
    import random

    from engine.tokenizer import _merge_long, _merge_short
    rust = RustTokenizer.from_file(str(FIXTURES_DIR / "tokenizer.json"))
    rebuilt = RebuiltBPETokenizer(lossy_vocab(rust, rust.get_vocab_size(), False))
    rng = random.Random(0)
    letters = "etaoinshrdlucmfwyp"
    for _ in range(200):
        word = "".join(rng.choice(letters) for _ in range(rng.randint(2, 150))).encode()
        parts = [bytes([b]) for b in word]
        assert _merge_long(list(parts), rebuilt._ids) == _merge_short(list(parts), rebuilt._ids)
    long_word = "".join(rng.choice(letters) for _ in range(3000))
    assert rebuilt.encode(long_word) == HFTokenizer(rust).encode(long_word)
