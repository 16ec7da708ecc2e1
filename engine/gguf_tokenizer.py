"""The tokenizer a GGUF file carries in its metadata, rebuilt exactly.

llama.cpp's converter (``_set_vocab_gpt2``, spec ``gguf-gptneox.md`` §1.3) stores the Hugging
Face tokenizer as ``tokenizer.ggml.tokens`` (the byte-level vocab strings, "Ġ" for a leading space,
so nothing is lost, unlike the legacy ggml vocab), ``tokenizer.ggml.merges`` ("a b" pairs),
``tokenizer.ggml.token_type`` and the special ids. That is everything a byte-level BPE needs, so
the tokenizer is rebuilt as a ``tokenizers`` BPE and run by the same Rust code as a tokenizer.json:

* NORMAL (and BYTE/UNKNOWN) tokens form the BPE vocab; CONTROL tokens are special added tokens
  (matched literally, before normalization); USER_DEFINED ones (GPT-NeoX's runs of 2..24 spaces)
  are normal added tokens; UNUSED ids (the ``[PAD<id>]`` rows up to the model's padded vocab, which
  older converters marked USER_DEFINED) are left out: BPE never produces them;
* the GPT-NeoX tokenizer's NFC normalizer and GPT-2 pre-tokenizer regex, which GGUF does not
  record, because every GPT-NeoX model uses them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from engine.gguf_constants import TOKENIZER_MODEL_GPT2, TokenType
from engine.tokenizer import HFTokenizer, RebuiltBPETokenizer, Tokenizer, unicode_to_bytes

PAD_FILLER = re.compile(r"\[PAD(\d+)\]")
LOOKS_SPECIAL = re.compile(r"<\|[^|<>\s]{1,64}\|>")
BPE_TYPES = (TokenType.NORMAL, TokenType.UNKNOWN, TokenType.BYTE)


def token_roles(tokens: list[str], token_types: list[int] | None) -> list[int]:
    """Each id's TokenType, with the filler rows of older converters (USER_DEFINED "[PAD<id>]")
    made UNUSED; without a token_type array (or for type 0, UNDEFINED), roles are inferred the way
    the converter assigns them."""
    byte_level = unicode_to_bytes()
    roles = []
    for i, token in enumerate(tokens):
        role = token_types[i] if token_types is not None else None
        role = role or None                 # 0: llama.cpp's UNDEFINED, inferred like a missing array
        filler = PAD_FILLER.fullmatch(token)
        if filler and int(filler.group(1)) == i and role in (None, TokenType.USER_DEFINED, TokenType.UNUSED):
            role = TokenType.UNUSED
        elif role is None:
            if LOOKS_SPECIAL.fullmatch(token):
                role = TokenType.CONTROL
            elif all(c in byte_level for c in token):
                role = TokenType.NORMAL
            else:
                role = TokenType.USER_DEFINED
        roles.append(int(role))
    return roles


def vocab_bytes(tokens: list[str], token_types: list[int] | None) -> list[bytes]:
    """The raw bytes of every id (the legacy reader's ``vocab``): BPE tokens through the inverse
    GPT-2 byte table, added tokens literally, unused ids empty."""
    byte_level = unicode_to_bytes()
    out = []
    for token, role in zip(tokens, token_roles(tokens, token_types)):
        if role == TokenType.UNUSED:
            out.append(b"")
        elif role in BPE_TYPES and all(c in byte_level for c in token):
            out.append(bytes(byte_level[c] for c in token))
        else:
            out.append(token.encode("utf-8"))
    return out


@dataclass
class EmbeddedTokenizer:
    """A GGUF file's tokenizer metadata; ``build()`` makes the Tokenizer."""

    model: str
    tokens: list[str]
    token_types: list[int] | None
    merges: list[str] | None
    source: str
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    _built: Tokenizer | None = field(default=None, repr=False, compare=False)

    def build(self) -> Tokenizer:
        """The exact tokenizer (ValueError when the metadata is not a byte-level BPE); without
        merges, the BPE rebuilt from the vocabulary as for a legacy file. Built once (about a
        second for GPT-NeoX's 50k tokens and merges), then shared: tokenizers are stateless."""
        if self._built is None:
            self._built = self._build()
        return self._built

    def _build(self) -> Tokenizer:
        if self.model != TOKENIZER_MODEL_GPT2:
            raise ValueError(f"{self.source}: tokenizer.ggml.model is {self.model!r}, not the byte-level BPE "
                             f"({TOKENIZER_MODEL_GPT2!r}) of GPT-NeoX models; give a tokenizer.json")
        if not self.merges:
            return RebuiltBPETokenizer(vocab_bytes(self.tokens, self.token_types), source=self.source)
        from tokenizers import Tokenizer as RustTokenizer
        try:
            hf = RustTokenizer.from_str(json.dumps(self.tokenizer_json()))
        except Exception as e:     # tokenizers raises a bare Exception for inconsistent input
            raise ValueError(f"{self.source}: the tokenizer in the file's metadata is unusable: {e}") from None
        roles = token_roles(self.tokens, self.token_types)
        used = [i for i, r in enumerate(roles) if r != TokenType.UNUSED]
        # ids run to the last used token: unused ones and repeated strings leave gaps the
        # tokenizers library does not count
        tok = HFTokenizer(hf, source=f"the metadata of {self.source}", n_vocab=used[-1] + 1 if used else 0)
        if self.eos_id is not None:
            tok.eos_id = self.eos_id
        return tok

    def tokenizer_json(self) -> dict:
        """The metadata as a Hugging Face tokenizer.json document."""
        roles = token_roles(self.tokens, self.token_types)
        vocab: dict[str, int] = {}
        added = []
        for i, (token, role) in enumerate(zip(self.tokens, roles)):
            if role != TokenType.UNUSED:
                vocab.setdefault(token, i)     # added tokens too: tokenizers numbers them by the vocab
            if role in (TokenType.CONTROL, TokenType.USER_DEFINED):
                special = role == TokenType.CONTROL
                added.append(dict(id=i, content=token, single_word=False, lstrip=False, rstrip=False,
                                  normalized=not special, special=special))
        byte_level = dict(type="ByteLevel", add_prefix_space=False, trim_offsets=True, use_regex=True)
        return dict(
            version="1.0", truncation=None, padding=None, added_tokens=added,
            normalizer=dict(type="NFC"), pre_tokenizer=byte_level, post_processor=None, decoder=byte_level,
            model=dict(type="BPE", dropout=None, unk_token=None, continuing_subword_prefix=None,
                       end_of_word_suffix=None, fuse_unk=False, byte_fallback=False, ignore_merges=False,
                       vocab=vocab, merges=list(self.merges or [])),
        )
