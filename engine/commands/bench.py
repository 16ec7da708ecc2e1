"""``bench MODEL --threads N --prompt-tokens P --gen-tokens G [--json]``: how fast the fast path runs.

Feeds token ids (no tokenizer needed): a seeded random prompt of P ids, then G greedy steps.
Reports the load time (map + repack), the JIT time (compiling or loading numba's cache for both
evaluation paths), prompt and generation speed, and memory: the peak and current resident set
beside the budget (file size + KV cache in use).

With ``--parallel N`` it also times N sequences continuing the same prompt through
``session.branch`` (engine.model.Branches): N different first tokens (the prompt's N most likely),
then greedy steps, one pass over the weights per step for all N, as many steps as the single
run, between two runs of the single sequence (``gen_tokens_per_s`` is then their mean, so that
a load that changes steadily during the measurement biases neither side).
``parallel_gen_tokens_per_s`` counts the tokens of all N and ``parallel_speedup`` is its ratio to
``gen_tokens_per_s``; ``parallel_rss_mib`` is the resident set after the N-sequence run, to compare
with ``single_rss_mib`` (after the first single run) plus ``parallel_kv_mib`` (the keys and values
of the N sequences' own tokens).

Speeds are steady-state ones: the prompt is evaluated once and truncated away before the timed
pass, as compilation is done before timing. A fresh process's first touch of the KV cache and
activation memory costs page faults (on this project's VM, first-touched memory costs up to 2 s
per GiB, 0.2 s once the guest has used it), which would otherwise count as prompt time. The same
session is reused, so the resident figures are those of one session.
"""
from __future__ import annotations

import json
import resource
import time

import numpy as np

from engine.errors import CLIError
from engine.session import MAX_BRANCHES


def register(sub):
    p = sub.add_parser("bench", help="measure load, compile, prompt and generation speed of the fast path")
    p.add_argument("model", help="a legacy ggml .bin or a GGUF .gguf file")
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: physical cores)")
    p.add_argument("--prompt-tokens", type=int, default=32, help="prompt length in tokens (default 32)")
    p.add_argument("--gen-tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompt ids")
    p.add_argument("--parallel", type=int, default=None, metavar="N",
                   help="also time N sequences after the same prompt, one pass per token for all (1..8)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # KiB on Linux


def bench(path, threads=None, prompt_tokens=32, gen_tokens=64, seed=0, parallel=None) -> dict:
    """Run the measurement; returns the figures as a dict (the --json keys)."""
    from engine import fast
    from engine.config import Config
    from engine.model_file import open_model_file
    from engine.qkv_layout import settle_qkv_layout

    if prompt_tokens < 1 or gen_tokens < 0:
        raise CLIError("--prompt-tokens must be at least 1 and --gen-tokens at least 0")
    if parallel is not None and not (1 <= parallel <= MAX_BRANCHES and gen_tokens >= 1):
        raise CLIError(f"--parallel must be within 1..{MAX_BRANCHES}, with --gen-tokens at least 1")
    t0 = time.perf_counter()
    f = open_model_file(path)
    config = Config.from_file(f)
    model = fast.build(f, config, threads=threads)
    settle_qkv_layout(f, model)           # a GGUF file that does not say its QKV order
    load_s = time.perf_counter() - t0
    n_ctx = prompt_tokens + gen_tokens
    if n_ctx > config.n_ctx:
        raise CLIError(f"--prompt-tokens + --gen-tokens = {n_ctx} exceed the model's context of {config.n_ctx}")
    compile_s = model.warm_up()
    if parallel:
        compile_s += warm_up_branches(model, parallel)

    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, min(config.n_vocab, 50277), size=prompt_tokens).tolist()
    session = model.new_session(n_ctx)
    session.eval(prompt)                  # steady state (see the module docstring), then forget it
    session.truncate(0)
    t = time.perf_counter()
    prompt_logits = session.eval(prompt)
    prompt_s = time.perf_counter() - t
    gen_s = greedy_seconds(session, prompt_logits, gen_tokens)
    kv_bytes = np.dtype(model.kv_dtype).itemsize        # 2 (fp16, the default), 4 with NEOX_WRITER_KV=f32
    kv_mib = 2 * config.n_layer * n_ctx * config.n_embd * kv_bytes / 2**20
    result = {}
    if parallel:
        rss_single = current_rss_mib()
        session.truncate(prompt_tokens)
        branches = session.branch(parallel, gen_tokens)
        starts = np.argsort(prompt_logits)[::-1][:parallel]      # N different first tokens
        t = time.perf_counter()
        rows = branches.eval([int(x) for x in starts])
        for _ in range(gen_tokens - 1):
            rows = branches.eval([int(np.argmax(r)) for r in rows])
        parallel_s = time.perf_counter() - t
        parallel_rss = current_rss_mib()
        # the single sequence again, after: its mean over both runs cancels a steady drift of the load
        session.truncate(prompt_tokens)
        gen_s = (gen_s + greedy_seconds(session, prompt_logits, gen_tokens)) / 2
        result = dict(parallel_n=parallel, parallel_gen_tokens_per_s=round(parallel * gen_tokens / parallel_s, 2),
                      parallel_speedup=round(parallel * gen_s / parallel_s, 2),
                      parallel_rss_mib=round(parallel_rss, 1), single_rss_mib=round(rss_single, 1),
                      parallel_kv_mib=round(2 * config.n_layer * parallel * gen_tokens * config.n_embd * kv_bytes / 2**20,
                                              1))
    return dict(
        model=str(path), weight_type=f.weight_type, qnt_version=f.qnt_version, threads=model.threads,
        kernels=fast.KERNELS,
        load_s=round(load_s, 3), compile_s=round(compile_s, 3),
        prompt_tokens=prompt_tokens, gen_tokens=gen_tokens,
        prompt_tokens_per_s=round(prompt_tokens / prompt_s, 2),
        gen_tokens_per_s=round(gen_tokens / gen_s, 2) if gen_tokens else None,
        peak_rss_mib=round(peak_rss_mib(), 1), rss_mib=round(current_rss_mib(), 1),
        file_mib=round(f.file_size / 2**20, 1), kv_cache_mib=round(kv_mib, 1), **result,
    )


def greedy_seconds(session, logits, steps: int) -> float:
    """Seconds for ``steps`` greedy tokens of one sequence, one session.eval each."""
    t = time.perf_counter()
    for _ in range(steps):
        logits = session.eval([int(np.argmax(logits))])
    return time.perf_counter() - t


def warm_up_branches(model, n: int) -> float:
    """Compile (or load from numba's cache) the batched path for n sequences; returns the seconds."""
    t0 = time.perf_counter()
    session = model.new_session(min(model.config.n_ctx, 3))
    session.eval([0])
    session.branch(n, 2).eval([0] * n)
    return time.perf_counter() - t0


def run(args) -> int:
    result = bench(args.model, args.threads, args.prompt_tokens, args.gen_tokens, args.seed, args.parallel)
    if args.json:
        print(json.dumps(result))
        return 0
    r = result
    print(f"model          {r['model']} ({r['weight_type']}, quantization version {r['qnt_version']})")
    print(f"threads        {r['threads']} (kernels: {r['kernels']})")
    print(f"load           {r['load_s']:.2f} s")
    print(f"compile (JIT)  {r['compile_s']:.2f} s")
    print(f"prompt         {r['prompt_tokens_per_s']:.1f} tokens/s ({r['prompt_tokens']} tokens)")
    if r["gen_tokens_per_s"] is not None:
        print(f"generation     {r['gen_tokens_per_s']:.1f} tokens/s ({r['gen_tokens']} tokens)")
    if r.get("parallel_n"):
        print(f"parallel       {r['parallel_gen_tokens_per_s']:.1f} tokens/s for {r['parallel_n']} sequences "
              f"({r['parallel_speedup']:.2f}x the single sequence), resident {r['parallel_rss_mib']:.0f} MiB after")
    print(f"memory         peak {r['peak_rss_mib']:.0f} MiB, now {r['rss_mib']:.0f} MiB "
          f"(file {r['file_mib']:.0f} MiB + KV cache {r['kv_cache_mib']:.0f} MiB + 100 MiB budget)")
    return 0
