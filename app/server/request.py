"""What the server asks of the generation worker, and what the worker streams back.

Both API dialects (KoboldCpp's and OpenAI's) are translated into one `GenerationRequest`;
the worker answers with a stream of one `PromptWindow`, `PromptScores` (only when the client
asked for the prompt's log-probabilities), `ChoiceEvent`s wrapping the engine's TokenEvent/DoneEvent for
each of the `n` candidates in turn, or a `WorkerFailed`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.sampling import SamplerSettings


@dataclass
class GenerationRequest:
    """One client request as the engine understands it (already validated and capped)."""

    prompt: str
    settings: SamplerSettings
    max_tokens: int
    memory: str = ""
    stop: list = field(default_factory=list)
    max_context: int | None = None
    n: int = 1                       # candidates, generated one after the other from the cached prompt
    prompt_logprobs: int | None = None   # score the prompt too (OpenAI echo+logprobs), with this many alternatives
    genkey: str = ""                 # KoboldCpp's client-chosen id for check/abort


@dataclass(frozen=True)
class PromptWindow:
    """The prompt as the model reads it, sent before any token: its length in tokens and how many
    of the oldest story tokens were cut to fit the context (the client is told, not left guessing)."""

    tokens: int
    dropped: int


@dataclass(frozen=True)
class PromptScores:
    """Log-probabilities of the prompt tokens (the first has none) with top alternatives."""

    tokens: list                     # token ids of the prompt
    logprobs: list                   # float | None per token
    top: list                        # per token: [(id, logprob), ...] most likely first ([] for the first)


@dataclass(frozen=True)
class ChoiceEvent:
    """An engine TokenEvent or DoneEvent belonging to candidate `index`."""

    index: int
    event: object


@dataclass(frozen=True)
class WorkerFailed:
    """The worker could not run the request: the message is shown to the client."""

    message: str
    client_error: bool = False       # a bad setting (400) rather than a server failure (500)
