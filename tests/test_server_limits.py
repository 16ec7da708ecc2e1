"""The API server answers every connection (issue 16): a burst of clients, connections over the
cap, clients too slow to send a header, and sampler values the app's own panel could not set."""
from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from app.sampler_rows import MAX_TOKEN_RANGE, SAMPLER_RANGES, SAMPLER_ROWS
from app.server.errors import ApiError
from app.server.generation_input import FIELD_RANGES, generation_request
from app.server.http import ServerConfig
from server_load import load
from test_server_support import load_worker, request, serving, wait_until


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return load_worker(tmp_path_factory.mktemp("limits"))


def test_a_port_in_use_leaves_no_guard_thread(worker):
    import threading
    from app.server.http import ApiServer
    with serving(worker) as server:
        before = sum(t.name == "neox-server-guard" for t in threading.enumerate())
        second = ApiServer(worker, ServerConfig(port=server.address[1]))
        with pytest.raises(OSError):
            second.start()
        assert wait_until(lambda: sum(t.name == "neox-server-guard" for t in threading.enumerate()) == before)


def test_the_defaults_are_the_issues():
    config = ServerConfig()
    assert config.max_connections == 64 and config.header_timeout == 10.0


def test_64_clients_at_once_every_request_gets_an_answer(worker):
    # (tests/server_load.py --clients 64 --requests 2000 is the full run; this is a tenth of it)
    with serving(worker) as server:
        result = load(server.address, clients=64, requests=320, timeout=30)
    assert result["answered"] == result["requests"], result["counts"]
    assert set(result["counts"]) <= {"200", "503"}, result["counts"]       # a 503 without Retry-After fails
    assert result["counts"].get("200", 0) > 0


def hold(server, n: int) -> list[socket.socket]:
    """n connections that have sent half a header (each holds one of the server's slots)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(server.address, timeout=10)
        s.sendall(b"GET /api/v1/model HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        socks.append(s)
    return socks


def test_a_connection_over_the_cap_is_answered_503_at_once(worker):
    with serving(worker, max_connections=4, header_timeout=60) as server:
        holders = hold(server, 4)
        try:
            assert wait_until(lambda: server._httpd.active_connections == 4)
            start = time.perf_counter()
            status, headers, body = request(server, "POST", "/api/v1/generate", {"prompt": "Hi", "max_length": 1})
            assert time.perf_counter() - start < 2.0
            assert status == 503 and headers["Retry-After"] == "1"
            assert "too many connections" in body["detail"]["msg"] and body["error"]["code"] == 503
            holders.pop().close()
            assert wait_until(lambda: server._httpd.active_connections == 3)
            assert request(server, "GET", "/api/v1/model")[0] == 200      # a slot is free again
        finally:
            for s in holders:
                s.close()


def test_a_client_that_has_not_sent_its_whole_header_in_time_is_dropped(worker):
    with serving(worker, header_timeout=0.5) as server:
        slow = socket.create_connection(server.address, timeout=10)
        slow.sendall(b"GET /api/v1/model HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.perf_counter()
        closed = False
        try:
            while time.perf_counter() - start < 5:
                slow.sendall(b"X-Slow: 1\r\n")         # a header line every 0.1 s: each read is quick
                time.sleep(0.1)
        except OSError:
            closed = True
        if not closed:
            slow.settimeout(5)
            closed = slow.recv(100) == b""
        slow.close()
        assert closed and time.perf_counter() - start < 3.0
        assert wait_until(lambda: server._httpd.active_connections == 0)
        # a client that sends its header in time is served, also on a kept-open connection
        conn = http.client.HTTPConnection(*server.address, timeout=10)
        for _ in range(2):
            conn.request("GET", "/api/v1/model")
            assert conn.getresponse().read() and True
            time.sleep(0.2)
        conn.close()


SETTINGS_FIELDS = sorted(set(SAMPLER_RANGES) | {"repeat_penalty", "repetition_penalty", "dynatemp_low",
                                                 "dynatemp_high", "presence_penalty", "frequency_penalty",
                                                 "dry_penalty_last_n"})


def build(body: dict):
    return generation_request(body, n_ctx=2048, max_length_cap=1024, eos_id=0, n_vocab=320)


# dynamic temperature given as its two ends: each needs the other
PARTNER = {"dynatemp_low": "dynatemp_high", "dynatemp_high": "dynatemp_low"}


@pytest.mark.parametrize("field", SETTINGS_FIELDS)
def test_every_numeric_sampler_field_is_range_checked(field):
    low, high = FIELD_RANGES[field]

    def body(value, partner):
        return {field: value, **({PARTNER[field]: partner} if field in PARTNER else {})}
    build(body(high, high))
    build(body(low, low))
    step = 1 if isinstance(high, int) else 0.01
    for value in (high + step, low - step, high * 1000 + 1000):
        with pytest.raises(ApiError) as err:
            build(body(value, 0.0))
        assert err.value.status == 400 and err.value.param == field and field in err.value.message


def test_a_temperature_of_1e9_is_refused_in_each_apis_shape(worker):
    with serving(worker) as server:
        status, _, body = request(server, "POST", "/api/v1/generate", {"prompt": "Hi", "temperature": 1e9})
        assert status == 400 and body["detail"]["type"] == "bad_input"
        assert body["detail"]["msg"] == "temperature: must be between 0 and 5, got 1000000000.0"
        status, _, body = request(server, "POST", "/v1/completions", {"prompt": "Hi", "temperature": 1e9})
        assert status == 400 and body["error"]["param"] == "temperature"
        status, _, body = request(server, "POST", "/completion", {"prompt": "Hi", "repeat_last_n": 999999})
        assert status == 400 and "repeat_last_n" in json.dumps(body)


def test_the_server_takes_every_value_the_panel_offers():
    """Panel and server agree: each row's two ends are accepted by the server under the row's
    name, and nothing outside is (the test above); the panel's ranges are the clients' own."""
    for row in SAMPLER_ROWS:
        assert FIELD_RANGES[row.name][1] == row.maximum
        assert FIELD_RANGES[row.name][0] <= row.minimum
    assert SAMPLER_RANGES["temperature"] == (0.0, 5.0) and SAMPLER_RANGES["rep_pen_range"][1] >= 8192


@pytest.mark.parametrize("field, value", [
    ("temperature", 5), ("temperature", 4.0), ("rep_pen", 3), ("rep_pen_range", 8192), ("rep_pen_range", 65536),
    ("rep_pen_range", -1), ("rep_pen_slope", 10), ("mirostat_tau", 20), ("top_k", -1), ("dynatemp_exponent", 10),
    ("dry_penalty_last_n", 8192), ("smoothing_curve", 10)])
def test_the_ends_of_sillytaverns_sliders_are_accepted(field, value):
    """SillyTavern 1.12's own slider ends (public/index.html: textgen temperature 0-5, Kobold
    temperature 0-4, repetition penalty 1-3, range -1 ("All") to 8192 and 65536 with the context
    unlocked, Kobold slope 0-10, mirostat tau 0-20, top-k -1 to 200, dynamic temperature exponent to 10)."""
    settings = build({field: value}).settings
    if field == "rep_pen_range" and value == -1:
        assert settings.rep_pen_range == MAX_TOKEN_RANGE          # "All": the whole context
    elif field == "top_k":
        assert settings.top_k == 0                                # -1: off
    else:
        assert getattr(settings, field) == value


@pytest.mark.parametrize("name", ["seed", "sampler_seed"])
def test_any_integer_seed_is_reduced_like_koboldcpps_and_still_repeats(name):
    """SillyTavern's seed box goes to 2**64 - 1 (and the text-generation one has no limit): such
    a seed keeps its low 32 bits, as in KoboldCpp's C int, and so still repeats the same text;
    any negative seed (-1 as sent) is random; a fraction is refused."""
    assert build({name: 2**64 - 1}).settings.seed == 2**32 - 1
    assert build({name: 2**31}).settings.seed == 2**31
    assert build({name: 12345 + 7 * 2**32}).settings.seed == 12345
    assert build({name: 10**40}).settings.seed == 10**40 % 2**32
    assert build({name: 1e21}).settings.seed == int(1e21) % 2**32        # a JavaScript number past 2**53
    assert build({name: -1}).settings.seed is None and build({name: -2**63}).settings.seed is None
    with pytest.raises(ApiError) as err:
        build({name: 1.5})
    assert err.value.param == name

