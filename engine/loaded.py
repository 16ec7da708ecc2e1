"""A model opened for writing: the file, the tokenizer that belongs to it and a Generator.

The desktop app's engine thread, the API server and the command line all open a model with
``open_model(path)``, so they agree on which tokenizer.json belongs to a model file: the one
named explicitly, else ``<stem>.tokenizer.json`` beside the file (several models can share a
folder), else ``tokenizer.json`` beside it, else the tokenizer a GGUF file's metadata holds, else
the BPE rebuilt from the file's own vocabulary.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from engine.generator import Generator
from engine.model import Model, load_model
from engine.tokenizer import Tokenizer, load_tokenizer

REBUILT_NOTE = "rebuilt from the model's vocabulary"
EMBEDDED_NOTE = "from the GGUF file's metadata"


def find_tokenizer_json(model_path) -> Path | None:
    """The tokenizer.json that belongs to a model file: `<stem>.tokenizer.json`, else
    `tokenizer.json` beside it; None when there is neither."""
    model_path = Path(model_path)
    for candidate in (model_path.with_name(model_path.stem + ".tokenizer.json"),
                      model_path.with_name("tokenizer.json")):
        if candidate.is_file():
            return candidate
    return None


@dataclass
class LoadedModel:
    """An open model with its tokenizer and the Generator (one KV cache) that runs it."""

    model: Model
    tokenizer: Tokenizer
    generator: Generator
    path: Path
    tokenizer_path: Path | None     # None: from the GGUF metadata or rebuilt from the file's vocabulary

    @property
    def approximate(self) -> bool:
        """True when the tokenizer is the rebuilt one, which is lossy for some text."""
        return bool(getattr(self.tokenizer, "approximate", self.tokenizer_path is None))

    @property
    def tokenizer_note(self) -> str:
        """Where the tokenizer came from, in words for the user."""
        if self.tokenizer_path:
            return str(self.tokenizer_path)
        return REBUILT_NOTE if self.approximate or self.model.file.embedded_tokenizer is None else EMBEDDED_NOTE

    def close(self) -> None:
        self.model.close()


def open_model(path, tokenizer_json=None, *, backend: str = "auto", threads: int | None = None,
               n_ctx: int | None = None) -> LoadedModel:
    """Open a legacy ggml or GGUF GPT-NeoX file with its tokenizer and a Generator.

    `tokenizer_json` names a tokenizer file explicitly (FileNotFoundError when it does not
    exist); otherwise `find_tokenizer_json` looks beside the model. `n_ctx` caps the
    generator's context (default: the model's). Raises ModelFormatError for a malformed file.
    """
    path = Path(path)
    if tokenizer_json:
        tokenizer_path = Path(tokenizer_json)
        if not tokenizer_path.is_file():
            raise FileNotFoundError(errno.ENOENT, "no such tokenizer file", os.fspath(tokenizer_path))
    else:
        tokenizer_path = find_tokenizer_json(path)
    model = load_model(path, backend=backend, threads=threads)
    try:
        tokenizer = load_tokenizer(model.vocab, str(tokenizer_path) if tokenizer_path else None, source=str(path),
                                   embedded=model.file.embedded_tokenizer)
        generator = Generator(model, tokenizer, n_ctx=n_ctx)
    except BaseException:
        model.close()      # a bad tokenizer must not leave the model's file mapped
        raise
    return LoadedModel(model, tokenizer, generator, path, tokenizer_path)
