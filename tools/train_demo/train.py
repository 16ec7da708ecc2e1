"""Trains the demo GPT-NeoX model (Pythia-shaped, tiny) on the corpus from corpus.py.

The model is transformers' GPTNeoXForCausalLM: rotary embedding on a quarter of each head
(rotary_pct 0.25), parallel residual, exact GELU, untied output head, like Pythia. Training is
AdamW with linear warmup and cosine decay over a fixed number of steps, on random windows of the
tokenized training text, on --threads CPU threads (the build machine is shared: run it under
`nice`). Everything random comes from --seed, so the same command on the same torch version and
thread count gives the same weights.

Training windows may be shorter than the model's context (--train-ctx): attention's cost grows
with the window, and most of what a small model learns is local. Validation always uses full
n_ctx windows, on both held-out texts (val.txt, and val-moby.txt when corpus.py wrote it).

The checkpoint directory (a Hugging Face model folder plus tokenizer.json and the optimizer state)
is rewritten every --ckpt-every steps, so an interrupted run still leaves a usable model and
--resume continues it exactly.

    python tools/train_demo/train.py --work WORKDIR [--steps 1200 ...]

reads WORKDIR/{train.txt,val.txt,val-moby.txt,tokenizer.json}; writes WORKDIR/hf/ and
WORKDIR/train_log.jsonl.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from corpus import DOC_SEPARATOR, VALIDATION_FILES
from schedule import learning_rate


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-ctx", type=int, default=512, help="the model's context (validation windows)")
    p.add_argument("--train-ctx", type=int, default=None,
                   help="tokens per training window (default n_ctx; at most n_ctx)")
    p.add_argument("--batch", type=int, default=4, help="windows of train-ctx tokens per step")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--schedule", choices=("cosine", "wsd"), default="cosine",
                   help="after warmup: cosine decay over all steps, or wsd (warmup-stable-decay): "
                        "constant lr, then a linear decay over the last --decay-frac of the steps")
    p.add_argument("--decay-frac", type=float, default=0.2, help="wsd: share of the steps spent decaying")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.0,
                   help="attention and hidden dropout while training (the corpus is small: a run of "
                        "several epochs overfits without it); the exported model has none")
    p.add_argument("--attn-dropout", type=float, default=None,
                   help="dropout on the attention weights (default: --dropout); 0 keeps SDPA's fused kernel, "
                        "about 2.4 times faster a step with --bf16 (384x6, --dropout 0.1: 1144 -> 2706 tokens/s)")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (part of what makes a run reproducible)")
    p.add_argument("--bf16", action="store_true",
                   help="forward and backward under CPU autocast to bfloat16 (weights, AdamW and the loss stay "
                        "float32): on a CPU with AMX or AVX512-BF16 the products run several times faster")
    p.add_argument("--max-minutes", type=float, default=70.0,
                   help="safety stop: checkpoint and end after this much wall time")
    p.add_argument("--stop-after", type=int, default=None,
                   help="end after this step without changing the schedule (reproduces a run the "
                        "--max-minutes stop ended early)")
    p.add_argument("--resume", action="store_true", help="continue from WORKDIR/hf/train_state.pt")
    p.add_argument("--init-from", type=Path, default=None,
                   help="a second stage: start from the weights and AdamW moments of this checkpoint "
                        "folder (a finished run's hf/, copied aside) with a new schedule counted from "
                        "step 0 (warm up again, hold, decay) and new random windows from --seed; the "
                        "log goes to train_log-<seed>.jsonl")
    args = p.parse_args()
    args.train_ctx = args.train_ctx or args.n_ctx
    if not 16 <= args.train_ctx <= args.n_ctx:
        p.error(f"--train-ctx {args.train_ctx} must be between 16 and --n-ctx {args.n_ctx}")
    if args.init_from is not None and args.resume:
        p.error("--init-from starts a new stage; --resume continues the current one: give one")
    return args


def tokenize_corpus(work: Path, tokenizer: Tokenizer) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Training ids (documents joined by <|endoftext|> = 0) and each held-out text's ids, as uint16."""
    text = (work / "train.txt").read_text(encoding="utf-8")
    eos = tokenizer.token_to_id(DOC_SEPARATOR)
    train: list[int] = []
    for doc in text.split(f"\n\n{DOC_SEPARATOR}\n\n"):
        train.extend(tokenizer.encode(doc.strip()).ids)
        train.append(eos)
    val = {}
    for name, filename in VALIDATION_FILES.items():
        if (work / filename).exists():  # a work dir made before val-moby.txt existed has only val.txt
            ids = tokenizer.encode((work / filename).read_text(encoding="utf-8").strip()).ids
            val[name] = np.array(ids, dtype=np.uint16)
    return np.array(train, dtype=np.uint16), val


def attention_dropout(args) -> float:
    """--attn-dropout, or --dropout where it is not given. Dropout on the attention weights costs three
    times the step (it takes SDPA off its fused kernel), so it has its own switch; the hidden dropout
    is a cheap elementwise mask."""
    own = getattr(args, "attn_dropout", None)
    return args.dropout if own is None else own


def training_loss(model, batch: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Mean next-token cross-entropy of windows [batch, train_ctx + 1]: the first train_ctx tokens in,
    the next token at every position as the target. With bf16 the model runs under CPU autocast;
    the loss is taken in float32."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=batch[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def make_model(args, vocab_size: int) -> GPTNeoXForCausalLM:
    config = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=args.n_embd,
        num_hidden_layers=args.n_layer,
        num_attention_heads=args.n_head,
        intermediate_size=4 * args.n_embd,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        max_position_embeddings=args.n_ctx,
        use_parallel_residual=True,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        tie_word_embeddings=False,
        attention_dropout=attention_dropout(args),
        hidden_dropout=args.dropout,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=0.02,
    )
    return GPTNeoXForCausalLM(config)


def make_optimizer(model, args) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on biases and LayerNorm gains)."""
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=args.lr, betas=(0.9, 0.95), eps=1e-8)


@torch.no_grad()
def validation_loss(model, val: np.ndarray, n_ctx: int) -> float:
    """Mean next-token loss over the validation text cut into non-overlapping n_ctx windows."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(val) - 1, n_ctx):
        chunk = torch.from_numpy(val[start:start + n_ctx + 1].astype(np.int64))
        if len(chunk) < 2:
            break
        logits = model(input_ids=chunk[None, :-1]).logits[0]
        total += torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum").item()
        count += len(chunk) - 1
    model.train()
    return total / count


def save_checkpoint(model, optimizer, step: int, rng: np.random.Generator, args) -> None:
    """Writes WORKDIR/hf atomically enough: into hf.tmp, then renames over the old one."""
    tmp = args.work / "hf.tmp"
    final = args.work / "hf"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.copy(args.work / "tokenizer.json", tmp / "tokenizer.json")
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "args": {k: str(v) for k, v in vars(args).items()}},
               tmp / "train_state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    print(f"step {step}: checkpoint -> {final}", flush=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)  # the machine's cores are shared; this is our budget
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    tokenizer = Tokenizer.from_file(str(args.work / "tokenizer.json"))
    train, val = tokenize_corpus(args.work, tokenizer)
    print(f"train tokens {len(train)}, val tokens " + ", ".join(f"{k} {len(v)}" for k, v in val.items()), flush=True)

    start_step = 0
    log_path = args.work / ("train_log.jsonl" if args.init_from is None else f"train_log-{args.seed}.jsonl")
    if args.init_from is not None:
        # The moments carry on, so the rewarmed steps do not start from a blank AdamW state; the
        # schedule, the step count and the random windows start again.
        model = GPTNeoXForCausalLM.from_pretrained(args.init_from)
        model.config.attention_dropout = attention_dropout(args)
        model.config.hidden_dropout = args.dropout
        model.gpt_neox.emb_dropout.p = args.dropout
        for layer in model.gpt_neox.layers:
            layer.post_attention_dropout.p = layer.post_mlp_dropout.p = args.dropout
            layer.attention.attention_dropout = attention_dropout(args)
        optimizer = make_optimizer(model, args)
        state = torch.load(args.init_from / "train_state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        log_path.unlink(missing_ok=True)
        print(f"a new stage from {args.init_from} (its step {state['step']})", flush=True)
    elif args.resume:
        state_dir = args.work / "hf"
        model = GPTNeoXForCausalLM.from_pretrained(state_dir)
        optimizer = make_optimizer(model, args)
        state = torch.load(state_dir / "train_state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start_step = state["step"]
        if state["args"].get("init_from", "None") != "None":  # resuming a second stage: its own log
            log_path = args.work / f"train_log-{state['args']['seed']}.jsonl"
        print(f"resumed at step {start_step}", flush=True)
    else:
        model = make_model(args, tokenizer.get_vocab_size())
        optimizer = make_optimizer(model, args)
        log_path.unlink(missing_ok=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, {model.config.num_hidden_layers} layers, "
          f"E={model.config.hidden_size}, n_ctx={args.n_ctx}, train windows {args.train_ctx}", flush=True)

    model.train()
    started = time.time()
    window = args.train_ctx + 1
    step = start_step
    with open(log_path, "a") as log:
        while step < args.steps:
            lr = learning_rate(step, args)
            for group in optimizer.param_groups:
                group["lr"] = lr
            starts = rng.integers(0, len(train) - window, size=args.batch)
            batch = torch.from_numpy(np.stack([train[s:s + window] for s in starts]).astype(np.int64))
            loss = training_loss(model, batch, args.bf16)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            elapsed = time.time() - started
            record = {"step": step, "lr": lr, "train_loss": loss.item(), "elapsed_s": round(elapsed, 1)}
            stop_early = elapsed > args.max_minutes * 60 or step == args.stop_after
            last = step == args.steps or stop_early
            if step % args.eval_every == 0 or last:
                # "val_loss"/"val_ppl" stay the Austen figures, as in earlier logs.
                for name, ids in val.items():
                    suffix = "" if name == "austen" else f"_{name}"
                    record[f"val_loss{suffix}"] = validation_loss(model, ids, args.n_ctx)
                    record[f"val_ppl{suffix}"] = math.exp(record[f"val_loss{suffix}"])
            if step % 20 == 0 or "val_loss" in record:
                print(json.dumps(record), flush=True)
                log.write(json.dumps(record) + "\n")
                log.flush()
            if step % args.ckpt_every == 0 or last:
                save_checkpoint(model, optimizer, step, rng, args)
            if stop_early:
                print(f"stopping at step {step} of {args.steps} (--max-minutes {args.max_minutes}, "
                      f"--stop-after {args.stop_after})", flush=True)
                break


if __name__ == "__main__":
    main()
