"""``perplexity MODEL --text FILE``: perplexity over a text with a sliding window.

Windows of `--context` tokens advance by half a context; each window scores only the tokens
that no earlier window scored, so every token after the first is scored once, with at least
half a context of history once the text is longer than one window (as Hugging Face's
perplexity guide does it). Probabilities are the softmax over the tokenizer's ids, without
the padding rows: those can never be generated either.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from engine.commands.generate import add_model_arguments, open_from_args
from engine.errors import CLIError

ROWS_PER_EVAL = 64   # logits rows held at once: bounded memory for 50k-entry vocabularies


def register(sub):
    p = sub.add_parser("perplexity", help="perplexity of a model over a text (sliding window)")
    p.add_argument("model", help="a legacy ggml .bin or a GGUF .gguf file")
    p.add_argument("--text", required=True, help="a UTF-8 text file")
    p.add_argument("--context", type=int, default=None, help="window size in tokens (default: the model's context)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_arguments(p)
    p.set_defaults(func=run)


def sliding_windows(n_tokens: int, context: int):
    """(begin, end, first_scored) for each window: tokens[begin:end] is evaluated and the
    targets first_scored..end-1 are scored (each predicted from the position before it)."""
    stride = max(1, context // 2)
    begin, scored_until = 0, 1
    while True:
        end = min(begin + context, n_tokens)
        yield begin, end, scored_until
        scored_until = end
        if end == n_tokens:
            return
        begin += stride


def score_window(session, tokens, begin, end, first_scored, n_vocab) -> float:
    """Sum of -log p(token) for the targets first_scored..end-1 of one window."""
    session.truncate(0)
    nll = 0.0
    for start in range(begin, end, ROWS_PER_EVAL):
        stop = min(start + ROWS_PER_EVAL, end)
        logits = session.eval(tokens[start:stop], all_logits=True)
        # Row i predicts token start + i + 1.
        rows = [i for i in range(stop - start) if first_scored <= start + i + 1 < end]
        if not rows:
            continue
        x = logits[rows, :n_vocab].astype(np.float64)
        peak = x.max(axis=1)
        log_z = peak + np.log(np.exp(x - peak[:, None]).sum(axis=1))
        targets = [tokens[start + i + 1] for i in rows]
        nll += float(np.sum(log_z - x[np.arange(len(rows)), targets]))
    return nll


def run(args) -> int:
    path = Path(args.text)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CLIError(f"--text: {path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise CLIError(f"--text: {path}: not UTF-8 text (byte {exc.start})") from None
    loaded = open_from_args(args)
    model, tokenizer = loaded.model, loaded.tokenizer
    n_ctx = int(model.info()["n_ctx"])
    context = n_ctx if args.context is None else args.context
    if not 2 <= context <= n_ctx:
        raise CLIError(f"--context must be within 2..{n_ctx}, got {context}")
    tokens = tokenizer.encode(text)
    if len(tokens) < 2:
        raise CLIError(f"--text: {path}: needs at least 2 tokens, has {len(tokens)}")
    n_vocab = min(int(tokenizer.n_vocab), int(model.info()["n_vocab"]))

    session = model.new_session(context)
    windows = list(sliding_windows(len(tokens), context))
    nll = 0.0
    for i, (begin, end, first) in enumerate(windows, 1):
        nll += score_window(session, tokens, begin, end, first, n_vocab)
        if not args.json and sys.stderr.isatty():
            print(f"\rwindow {i}/{len(windows)}", end="", file=sys.stderr, flush=True)
    scored = len(tokens) - 1
    ppl = math.exp(nll / scored)
    if args.json:
        print(json.dumps({"perplexity": ppl, "tokens": len(tokens), "scored_tokens": scored,
                          "context": context, "stride": max(1, context // 2), "windows": len(windows)}))
    else:
        if sys.stderr.isatty():
            print(file=sys.stderr)
        print(f"perplexity {ppl:.4f} over {len(tokens)} tokens ({scored} scored; context {context}, "
              f"stride {max(1, context // 2)}, {len(windows)} windows)")
    return 0
