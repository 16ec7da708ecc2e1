"""The learning-rate schedule of train.py, apart from torch so that it can be tested anywhere."""
from __future__ import annotations

import math


def learning_rate(step: int, args) -> float:
    """Linear warmup, then cosine decay from lr to min_lr at the last step, or (wsd) a constant lr
    and a linear decay to min_lr over the last decay_frac of the steps. With wsd every step before
    the decay has the same lr whatever --steps says, so a run may be given fewer steps on --resume
    (as long as it resumes before the decay begins) and still equal an uninterrupted run of that
    many steps: the way to fit a shared machine's uncertain speed into a deadline."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.schedule == "wsd":
        decay_start = args.steps - round(args.decay_frac * args.steps)
        if step < decay_start:
            return args.lr
        return args.lr + (args.min_lr - args.lr) * (step - decay_start + 1) / (args.steps - decay_start)
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))
