"""``generate MODEL --prompt TEXT``: stream a continuation to stdout (or JSON events with --json).

With ``--n N`` it writes N continuations of the prompt, generated together (one pass over the
weights per token for all of them, ``Generator.generate_many``): each printed whole when it ends,
under a line naming it and its seed; with --json the events carry an ``index``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.errors import CLIError


def register(sub):
    p = sub.add_parser("generate", help="continue a prompt, streaming the text as it is generated")
    p.add_argument("model", help="a legacy ggml .bin or a GGUF .gguf file")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--memory", default="", help="text kept at the head of the context when a long prompt is cut")
    add_model_arguments(p)
    p.add_argument("--max-tokens", type=int, default=80, help="how many tokens to generate at most (default 80)")
    p.add_argument("--context", type=int, default=None, help="context size to use (default: the model's)")
    p.add_argument("--preset", default="KoboldCpp default",
                   help='sampler preset: "KoboldCpp default", "ggml example" or "Deterministic"')
    p.add_argument("--temperature", type=float, help="0 means greedy")
    p.add_argument("--top-k", type=int, help="0 disables")
    p.add_argument("--top-p", type=float, help="1 disables")
    p.add_argument("--seed", type=int, help="makes the run reproducible (default: random, reported at the end)")
    p.add_argument("--n", type=int, default=1, metavar="N",
                   help="write N continuations (1..8), generated together; continuation i uses seed + i")
    p.add_argument("--stop", nargs="+", action="extend", default=[], metavar="STR",
                   help="stop when the text contains one of these strings (not printed)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per token, then a final {\"done\": true, ...} object")
    p.set_defaults(func=run)


def add_model_arguments(p):
    """The options every command that runs a model shares."""
    p.add_argument("--tokenizer", help="a Hugging Face tokenizer.json (default: <stem>.tokenizer.json or tokenizer.json "
                                       "next to the model file, else the tokenizer rebuilt from the file's vocab)")
    p.add_argument("--backend", default="auto", choices=["auto", "fast", "reference"])
    p.add_argument("--threads", type=int, default=None)


def open_from_args(args):
    """The model, its tokenizer and a Generator (engine.loaded.open_model): --tokenizer, else the
    tokenizer.json that belongs to the model file, else the BPE rebuilt from its vocabulary."""
    from engine.loaded import open_model

    if args.tokenizer is not None and not Path(args.tokenizer).is_file():
        raise CLIError(f"--tokenizer: {args.tokenizer}: no such file")
    loaded = open_model(args.model, args.tokenizer, backend=args.backend, threads=args.threads)
    if loaded.approximate:
        print("note: no tokenizer.json given; using the tokenizer rebuilt from the model's vocab, "
              "which is approximate for text needing its lossy tokens", file=sys.stderr)
    return loaded


def sampler_settings(args):
    """The preset with the options given on the command line laid over it."""
    from engine.sampling import SamplerSettings

    overrides = {name: value for name, value in (("temperature", args.temperature), ("top_k", args.top_k),
                                                 ("top_p", args.top_p), ("seed", args.seed))
                 if value is not None}
    return SamplerSettings.from_preset(args.preset, **overrides)


def run(args) -> int:
    from engine.generator import DoneEvent

    settings = sampler_settings(args)
    generator = open_from_args(args).generator
    options = dict(memory=args.memory, max_tokens=args.max_tokens, stop=args.stop, max_context=args.context)
    if args.n != 1:
        events = generator.generate_many(args.prompt, args.n, settings, **options)
    else:
        events = generator.generate(args.prompt, settings, **options)
    out = sys.stdout
    texts = {}
    for event in events:
        if isinstance(event, DoneEvent):
            finish(out, event, args, texts)
        elif args.json:
            line = {"text": event.text, "token": event.token, "top": [[t, p] for t, p in event.top]}
            out.write(json.dumps(dict(line, index=event.index) if args.n != 1 else line) + "\n")
        elif args.n == 1:
            out.write(event.text)
        else:
            texts[event.index] = texts.get(event.index, "") + event.text
        out.flush()
    return 0


def finish(out, done, args, texts) -> None:
    """Write what ends one continuation: its statistics (and, with --n, its text)."""
    if args.json:
        line = {
            "done": True, "stop_reason": done.stop_reason, "prompt_tokens": done.prompt_tokens,
            "prompt_tokens_reused": done.prompt_tokens_reused, "gen_tokens_per_s": done.gen_tokens_per_s,
            "gen_tokens": done.gen_tokens, "prompt_tokens_evaluated": done.prompt_tokens_evaluated,
            "prompt_tokens_dropped": done.prompt_tokens_dropped, "prompt_tokens_per_s": done.prompt_tokens_per_s,
            "stop_sequence": done.stop_sequence, "seed": done.seed}
        out.write(json.dumps(dict(line, index=done.index) if args.n != 1 else line) + "\n")
        out.flush()
        return
    if args.n != 1:
        out.write(f"=== continuation {done.index + 1} of {args.n} (seed {done.seed}) ===\n")
        out.write(texts.get(done.index, ""))
    out.write("\n")
    print(f"[{done.stop_reason}] prompt {done.prompt_tokens} tokens ({done.prompt_tokens_evaluated} "
          f"evaluated, {done.prompt_tokens_per_s:.1f} tokens/s); generated {done.gen_tokens} tokens "
          f"({done.gen_tokens_per_s:.1f} tokens/s); seed {done.seed}", file=sys.stderr)
