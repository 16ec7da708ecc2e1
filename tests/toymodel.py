"""A toy vocabulary and a toy bigram "model" for engine tests that need exact control over
what is likely (no tests here): the next token's logits depend only on the last token."""
from __future__ import annotations

import numpy as np


class BytesTokenizer:
    """A vocabulary of byte strings (id 0 is end-of-text); encode() is greedy longest-match."""

    def __init__(self, vocab):
        self.vocab = [v.encode() if isinstance(v, str) else v for v in vocab]
        self.n_vocab = len(self.vocab)
        self.eos_id = 0
        self.approximate = False

    def token_bytes(self, token):
        return self.vocab[token]

    def encode(self, text):
        data, out = text.encode(), []
        while data:
            best = max((i for i, v in enumerate(self.vocab) if v and data.startswith(v)),
                       key=lambda i: len(self.vocab[i]))
            out.append(best)
            data = data[len(self.vocab[best]):]
        return out

    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")


class BigramModel:
    """`table[last token]` are the logits of the next token (probabilities given per row)."""

    def __init__(self, probabilities: dict, n_vocab: int, n_ctx: int = 256):
        self.n_vocab, self.n_ctx = n_vocab, n_ctx
        self.table = np.full((n_vocab, n_vocab), -30.0, dtype=np.float32)
        for last, row in probabilities.items():
            for token, p in row.items():
                self.table[last, token] = np.log(p)

    def info(self):
        return {"n_ctx": self.n_ctx, "n_vocab": self.n_vocab, "path": "bigram"}

    def new_session(self, n_ctx=None):
        return BigramSession(self, n_ctx or self.n_ctx)


class BigramSession:
    """The Session protocol over a BigramModel."""

    def __init__(self, model, n_ctx):
        self.model, self.n_ctx = model, n_ctx
        self.tokens: list = []
        self.evaluated = 0

    def eval(self, tokens, all_logits=False):
        if len(self.tokens) + len(tokens) > self.n_ctx:
            raise ValueError("past the context")
        self.tokens += list(tokens)
        self.evaluated += len(tokens)
        rows = self.model.table[list(tokens)].copy()
        return rows if all_logits else rows[-1]

    def truncate(self, n):
        del self.tokens[n:]
