"""Running a job to the end for a non-streaming reply, and what the replies share.

`submit` queues a request (503 when the queue is full); `collect` gathers the job's events
into one `Candidate` per requested completion; `finish_reason` maps the engine's stop reason
onto the two values both APIs know.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from app.server.errors import ApiError, busy
from app.server.queue import Job, QueueFull
from app.server.request import ChoiceEvent, PromptScores, WorkerFailed


@dataclass
class Candidate:
    """One completion: its text so far, its token events and, once finished, the DoneEvent."""

    index: int
    text: str = ""
    tokens: list = field(default_factory=list)
    done: object = None


def submit(exchange, request) -> Job:
    try:
        return exchange.queue.submit(request)
    except QueueFull:
        raise busy() from None


def failure(event: WorkerFailed) -> ApiError:
    return ApiError(400 if event.client_error else 500, event.message)


def collect(exchange, job: Job) -> tuple[PromptScores | None, list[Candidate]]:
    """Wait for the whole job (aborting it if the client disconnects)."""
    scores = None
    candidates = [Candidate(i) for i in range(job.request.n)]
    for event in exchange.events(job):
        if isinstance(event, WorkerFailed):
            raise failure(event)
        if isinstance(event, PromptScores):
            scores = event
        elif isinstance(event, ChoiceEvent):
            c = candidates[event.index]
            if hasattr(event.event, "token"):
                c.text += event.event.text
                c.tokens.append(event.event)
            else:
                c.done = event.event
    return scores, [c for c in candidates if c.done is not None]


def finish_reason(done) -> str:
    """"stop" for the end-of-text token, a stop sequence or an abort; "length" when out of tokens.
    (KoboldCpp says "length" for stop sequences too; clients do not rely on that.)"""
    return "length" if done.stop_reason == "length" else "stop"


class EventStream:
    """A job's events for a streaming reply: the SSE headers go out with the first event, so a
    failure before it (a bad setting found by the worker) is still an ordinary error reply;
    a failure after it is sent as the event `error_event(message)` and ends the stream."""

    def __init__(self, exchange, job: Job, error_event):
        self.exchange = exchange
        self.job = job
        self.error_event = error_event
        self.sse = None

    def __iter__(self):
        for event in self.exchange.events(self.job):
            if isinstance(event, WorkerFailed):
                if self.sse is None:
                    raise failure(event)
                self.sse.send(self.error_event(event.message))
                self.sse = None
                return
            if self.sse is None:
                self.sse = self.exchange.start_sse()
            yield event

    def send(self, data, event: str | None = None) -> None:
        self.sse.send(data, event)

    def finish(self, raw: str) -> None:
        """Write the closing line (OpenAI's [DONE]) unless the stream failed or never started."""
        if self.sse is not None:
            self.sse.write(raw)
