"""``logits MODEL --tokens 1,2,3 --out F.npy``: the logits at every position, for checks."""
from __future__ import annotations

import numpy as np

from engine.errors import CLIError
from engine.model import load_model


def register(sub):
    p = sub.add_parser("logits", help="compute the logits of a token sequence and save them as .npy")
    p.add_argument("model")
    p.add_argument("--tokens", required=True, help="comma-separated token ids")
    p.add_argument("--out", required=True, help="output .npy file: float32 [n_tokens, n_vocab]")
    p.add_argument("--backend", default="auto", choices=["auto", "fast", "reference"])
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    except ValueError:
        raise CLIError(f"--tokens must be comma-separated integers, got {args.tokens!r}") from None
    model = load_model(args.model, backend=args.backend)
    np.save(args.out, model.logits(tokens))
    return 0
