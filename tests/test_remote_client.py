"""The remote backends against our own server, through both of its APIs: detection, models,
streaming generation, stop sequences, abort (server abort and closing the stream), token
counts, alternatives, and clear errors for refused keys and unreachable servers."""
from __future__ import annotations

import math
import socket
import threading
import time

import pytest

from app.remote import KoboldCppBackend, OpenAIBackend, RemoteError, detect
from app.remote.http import normalise_base_url
from engine.generator import DoneEvent, TokenEvent
from engine.sampling import SamplerSettings
from test_server_support import SlowWorker, load_worker, serving

PROMPT = "Once upon a time"
GREEDY = SamplerSettings.from_preset("Deterministic")


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return load_worker(tmp_path_factory.mktemp("remote"))


@pytest.fixture(scope="module")
def server(worker):
    with serving(worker, api_key="k3y") as s:
        yield s


def run(backend, *args, **kw):
    events = list(backend.generate(*args, **kw))
    assert all(isinstance(e, TokenEvent) for e in events[:-1]) and isinstance(events[-1], DoneEvent)
    return events[:-1], events[-1]


def local_text(worker, prompt, max_tokens, **kw):
    worker.generator.reset()
    events = list(worker.generator.generate(prompt, GREEDY, max_tokens=max_tokens, **kw))
    return events[-1]


@pytest.mark.parametrize("kind,cls", [(None, KoboldCppBackend), ("openai", OpenAIBackend)])
def test_detect_and_generate_like_the_local_engine(server, worker, kind, cls):
    backend = detect(server.url + "/v1/", "k3y", kind=kind)
    assert type(backend) is cls and backend.models() == ["tiny"] and backend.model == "tiny"
    if cls is KoboldCppBackend:
        assert backend.n_ctx == worker.n_ctx and backend.version == "1.76"
    else:
        assert backend.n_ctx == worker.n_ctx               # our /v1/models says context_length
    tokens, done = run(backend, PROMPT, GREEDY, max_tokens=12)
    local = local_text(worker, PROMPT, 12)
    assert done.text == "".join(t.text for t in tokens) == local.text
    assert done.stop_reason == ("length" if local.stop_reason == "length" else "eos")
    assert backend.tokenize(PROMPT) == worker.tokenizer.encode(PROMPT)
    assert backend.count_tokens("") == 0


def test_memory_and_stop_sequences_reach_the_server(server, worker):
    backend = detect(server.url, "k3y")
    full = local_text(worker, PROMPT, 20, memory="[A tale]\n").text
    stop = full[6:9]
    _, done = run(backend, PROMPT, GREEDY, memory="[A tale]\n", max_tokens=20, stop=[stop])
    assert done.text == full[:full.find(stop)]             # trimmed, as the engine does


def test_newer_samplers_and_phrase_bans_reach_a_koboldcpp_server(server, worker):
    backend = detect(server.url, "k3y")
    assert {"dry_multiplier", "xtc_probability", "dynatemp_range", "smoothing_factor",
            "banned_phrases"} <= backend.supported_samplers
    free = local_text(worker, PROMPT, 16).text
    phrase = free[2:8]
    settings = SamplerSettings(temperature=0, dry_multiplier=0.8, xtc_probability=0.5, dynatemp_range=0.2,
                               smoothing_factor=0.2, banned_phrases=[phrase], seed=7)
    _, done = run(backend, PROMPT, settings, max_tokens=16)
    worker.generator.reset()
    local = list(worker.generator.generate(PROMPT, settings, max_tokens=16))[-1]
    assert phrase not in done.text and done.text == local.text      # the server ran the same samplers


def test_openai_backend_returns_alternatives(server):
    backend = detect(server.url, "k3y", kind="openai")
    tokens, _ = run(backend, PROMPT, GREEDY, max_tokens=6, alternatives=3)
    for t in tokens:
        assert 0 < t.probability <= 1 and 1 <= len(t.top) <= 3
        assert t.probability == pytest.approx(t.top[0][1])   # greedy picks the likeliest
        assert all(isinstance(text, str) for text, _ in t.top)
    plain, _ = run(detect(server.url, "k3y"), PROMPT, GREEDY, max_tokens=3)
    assert all(math.isnan(t.probability) and t.top == [] for t in plain)


@pytest.mark.parametrize("kind", [None, "openai"])
@pytest.mark.parametrize("how", ["abort", "cancel"])
def test_stop_ends_the_remote_generation(worker, kind, how):
    slow = SlowWorker(worker, delay=0.05)
    with serving(slow) as server:
        backend = detect(server.url, kind=kind)
        settings = SamplerSettings(temperature=1.0, logit_bias={0: -100})
        cancel = threading.Event()
        events = backend.generate(PROMPT, settings, max_tokens=100, cancel=cancel)
        seen = [next(events)]
        (backend.abort if how == "abort" else cancel.set)()
        seen += list(events)
        assert isinstance(seen[-1], DoneEvent) and seen[-1].stop_reason == "cancelled"
        deadline = time.time() + 10
        while not slow.finished and time.time() < deadline:
            time.sleep(0.05)
        assert slow.finished[0].stop_reason == "cancelled" and slow.finished[0].gen_tokens < 100


def test_refused_key_and_unreachable_server_are_clear(server):
    with pytest.raises(RemoteError, match="API key was refused"):
        detect(server.url, "wrong", kind="openai").generate(PROMPT, GREEDY, max_tokens=2).__next__()
    backend = detect(server.url, "wrong")                   # detection endpoints are open
    with pytest.raises(RemoteError, match="API key was refused"):
        next(backend.generate(PROMPT, GREEDY, max_tokens=2))
    with pytest.raises(RemoteError, match="needs an API key"):
        detect(server.url).tokenize(PROMPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                            # nothing listens there
    with pytest.raises(RemoteError, match="could not connect"):
        detect(f"127.0.0.1:{port}")


def test_server_errors_are_reported_with_the_servers_message(server):
    backend = detect(server.url, "k3y", kind="openai")
    with pytest.raises(RemoteError, match=r"HTTP 400: top_p: must be between") as e:
        backend.client.call("POST", "/v1/completions", {"prompt": PROMPT, "top_p": 3})
    assert e.value.status == 400


def test_base_url_normalisation():
    assert normalise_base_url("localhost:5001/") == "http://localhost:5001"
    assert normalise_base_url("http://h:8080/v1") == "http://h:8080"
    assert normalise_base_url("https://h/proxy/api/") == "https://h/proxy"
    with pytest.raises(RemoteError):
        normalise_base_url("ftp://h")


def test_a_stream_cut_by_the_server_is_an_error_not_an_ending():
    """A server that dies mid-stream: the text so far was yielded, then RemoteError."""
    import http.server

    class Dying(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"result": "KoboldCpp", "version": "1.76"}' if self.path == "/api/extra/version" else \
                b'{"result": "koboldcpp/x", "value": 64}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b'event: message\ndata: {"token": "Hello", "finish_reason": "null"}\n\n')
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Dying)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        backend = detect(f"127.0.0.1:{httpd.server_address[1]}")
        events = backend.generate("x", GREEDY, max_tokens=5)
        assert next(events).text == "Hello"
        with pytest.raises(RemoteError, match="closed the stream before the generation finished"):
            next(events)
    finally:
        httpd.shutdown()
        httpd.server_close()
