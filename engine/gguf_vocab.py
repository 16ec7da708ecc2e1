"""The tokenizer metadata of a GGUF file (``tokenizer.ggml.*``), built for a model we write.

llama.cpp's ``gpt2`` tokenizer is byte-level BPE: the token strings in GPT-2's byte-to-unicode
form ("Ġthe"), a token type per id, and the merges as "left right" strings in rank order
(spec §1.3). Two sources:

* a Hugging Face ``tokenizer.json`` (exact): its vocab and merges as they are; added tokens keep
  their raw text, CONTROL when special, else USER_DEFINED (GPT-NeoX's runs of spaces), as
  llama.cpp's converter does;
* the legacy file's own vocabulary (no tokenizer.json at hand): the strings repaired as
  engine/tokenizer.py's rebuilt BPE does, and, since the file stores no merges, every split of
  a token into two tokens, ranked by the id of the result. That is the rebuilt tokenizer's rule
  ("merge the adjacent pair whose concatenation has the lowest id"), so llama.cpp tokenizes
  such a file as we do. Ids whose bytes the legacy file lost become UNUSED placeholders.

Ids past the tokenizer (Pythia pads its embedding to 50304 rows) are ``[PAD<id>]``, UNUSED, like
the converter writes them. Token strings are unique (llama.cpp requires it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ModelFormatError
from engine.gguf_constants import TokenType

ENDOFTEXT = "<|endoftext|>"


@dataclass
class GGUFVocab:
    """Token strings, token types, merges and special ids for the ``tokenizer.ggml.*`` keys."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    eos_id: int
    pre: str                      # tokenizer.ggml.pre: which pre-tokenizer regex llama.cpp uses
    source: str                   # where the tokens came from, in words
    notes: list[str] = field(default_factory=list)


def pre_tokenizer_name(tokens: list[str]) -> str:
    """llama.cpp's name for the pre-tokenizer: "olmo" is what its converter picks for the
    GPT-NeoX-20B tokenizer (the same hash as OLMo's); any other byte-level BPE of ours uses GPT-2's
    regex, which "gpt-2" names (all three select the same regex in llama.cpp)."""
    neox = len(tokens) >= 50277 and tokens[0] == ENDOFTEXT and tokens[1] == "<|padding|>"
    return "olmo" if neox else "gpt-2"


def _looks_special(text: str) -> bool:
    return text.startswith("<|") and text.endswith("|>")


def _unique(tokens: list[str], types: list[int], i: int, text: str, ttype: int, seen: set) -> None:
    """Set token i, or an UNUSED placeholder when the string is already taken."""
    if text in seen or text == "":
        text, ttype = f"[PAD{i}]" if text == "" else f"[DUP{i}]", TokenType.UNUSED
    seen.add(text)
    tokens[i], types[i] = text, int(ttype)


def vocab_from_tokenizer_json(path, n_rows: int) -> GGUFVocab:
    """The exact tokenizer of a Hugging Face tokenizer.json, padded to the model's n_rows ids."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
        if model.get("type", "BPE") != "BPE":
            raise ModelFormatError(path, None, f"tokenizer model {model.get('type')!r} is not byte-level BPE")
        vocab, merges = model["vocab"], model.get("merges", [])
        added = data.get("added_tokens") or []
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelFormatError(path, None, f"cannot read the tokenizer ({e!r})") from None
    tokens, types = [""] * n_rows, [int(TokenType.UNUSED)] * n_rows
    seen: set[str] = set()
    added_ids = {}
    for tok in added:
        if isinstance(tok, dict) and isinstance(tok.get("id"), int) and isinstance(tok.get("content"), str):
            added_ids[tok["id"]] = tok
    for text, i in sorted(vocab.items(), key=lambda kv: kv[1]):
        if not isinstance(i, int) or not 0 <= i < n_rows:
            raise ModelFormatError(path, None, f"token {text!r} has id {i!r}, outside the model's {n_rows} rows")
        if i not in added_ids:
            _unique(tokens, types, i, text, TokenType.NORMAL, seen)
    for i, tok in sorted(added_ids.items()):
        if not 0 <= i < n_rows:
            raise ModelFormatError(path, None, f"added token {tok['content']!r} has id {i}, outside the model's {n_rows} rows")
        special = tok.get("special") or _looks_special(tok["content"])
        _unique(tokens, types, i, tok["content"], TokenType.CONTROL if special else TokenType.USER_DEFINED, seen)
    for i in range(n_rows):
        if tokens[i] == "":
            _unique(tokens, types, i, "", TokenType.UNUSED, seen)
    merge_strings = []
    for m in merges:
        if isinstance(m, str):
            merge_strings.append(m)
        elif isinstance(m, (list, tuple)) and len(m) == 2 and all(isinstance(p, str) for p in m):
            merge_strings.append(f"{m[0]} {m[1]}")
        else:
            raise ModelFormatError(path, None, f"merge {m!r} is neither 'a b' nor a pair of strings")
    eos = next((i for i, t in enumerate(tokens) if t == ENDOFTEXT), 0)
    return GGUFVocab(tokens, types, merge_strings, eos, pre_tokenizer_name(tokens), f"{path} (exact)")


def vocab_from_legacy(vocab: list[bytes]) -> GGUFVocab:
    """Tokens and merges rebuilt from a legacy file's vocab strings (see the module docstring)."""
    from engine.tokenizer import bytes_to_unicode, repair_vocab

    rep = repair_vocab(vocab)
    table = bytes_to_unicode()

    def encoded(b: bytes) -> str:
        return "".join(table[x] for x in b)

    n_rows = len(vocab)
    tokens, types = [""] * n_rows, [int(TokenType.UNUSED)] * n_rows
    seen: set[str] = set()
    specials = set(rep.specials.values())
    space_runs = set(rep.space_runs.values())
    ids: dict[bytes, int] = {}
    lost = 0
    for i in range(n_rows):
        b = rep.token_bytes[i]
        if i in specials:
            _unique(tokens, types, i, b.decode("utf-8"), TokenType.CONTROL, seen)
        elif i in space_runs:
            _unique(tokens, types, i, b.decode("utf-8"), TokenType.USER_DEFINED, seen)
        elif rep.usable[i]:
            _unique(tokens, types, i, encoded(b), TokenType.NORMAL, seen)
            if types[i] == TokenType.NORMAL:
                ids.setdefault(b, i)
        elif i < rep.n_real and b:
            tokens[i], types[i] = f"[LOST{i}]", int(TokenType.UNUSED)
            seen.add(tokens[i])
            lost += 1
        else:
            _unique(tokens, types, i, "", TokenType.UNUSED, seen)
    merges = []
    for b, i in sorted(ids.items(), key=lambda kv: kv[1]):
        for cut in range(1, len(b)):
            left, right = b[:cut], b[cut:]
            if left in ids and right in ids:
                merges.append(f"{encoded(left)} {encoded(right)}")
    notes = []
    if lost:
        notes.append(f"{lost} tokens whose bytes the legacy file lost are UNUSED placeholders "
                     "(put the model's tokenizer.json beside the input for an exact tokenizer)")
    eos = rep.specials.get(ENDOFTEXT.encode(), 0)
    return GGUFVocab(tokens, types, merges, eos, pre_tokenizer_name(tokens),
                     "rebuilt from the legacy file's vocabulary", notes)
