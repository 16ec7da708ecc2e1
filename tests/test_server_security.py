"""Who may use the server: bind address and key, key headers, Host check, CORS, size caps."""
from __future__ import annotations

import pytest

from app.server.http import ApiServer, ServerConfig
from app.server.security import SecurityPolicy, host_name
from test_server_support import load_worker, request, serving

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return load_worker(tmp_path_factory.mktemp("security"))


def test_other_interfaces_need_an_api_key(worker):
    with pytest.raises(ValueError, match="API key is required"):
        ApiServer(worker, ServerConfig(host="0.0.0.0", port=0))
    ApiServer(worker, ServerConfig(host="0.0.0.0", port=0, api_key="k"))          # accepted, not started
    ApiServer(worker, ServerConfig(host="localhost", port=0))


def test_key_headers_on_counting_and_generating_endpoints(worker):
    with serving(worker, api_key="s3cret") as server:
        body = {"prompt": PROMPT}
        status, _, err = request(server, "POST", "/api/extra/tokencount", body)
        assert status == 401 and err["detail"] == {"error": "Unauthorized", "type": "unauthorized",
                                                   "msg": "Authentication key is missing or invalid."}
        assert request(server, "POST", "/api/extra/tokencount", body,
                       headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert request(server, "POST", "/api/extra/tokencount", body, headers={"X-Api-Key": "s3cret"})[0] == 200
        assert request(server, "POST", "/api/extra/tokencount", body,
                       headers={"Authorization": "Bearer s3cre"})[0] == 401
        for path in ("/api/v1/generate", "/api/extra/generate/stream", "/api/extra/generate/check",
                     "/api/extra/abort", "/v1/completions", "/v1/chat/completions"):
            assert request(server, "POST", path, {"prompt": PROMPT, "max_length": 2})[0] == 401, path
        # detection endpoints stay open; the model's name is hidden from callers without the key
        assert request(server, "GET", "/api/extra/version")[2]["protected"] is True
        assert request(server, "GET", "/api/v1/model")[2]["result"] == "koboldcpp/protected-model"
        assert request(server, "GET", "/api/v1/model", headers={"X-Api-Key": "s3cret"})[2]["result"] == "koboldcpp/tiny"
        # an abort without the key is only taken from this machine for the running job's genkey
        assert request(server, "POST", "/api/extra/abort", {"genkey": "KCPP1"})[0] == 401


@pytest.mark.parametrize("host,allowed", [
    ("127.0.0.1:5001", True), ("localhost", True), ("[::1]:80", True), ("192.168.1.20:5001", True),
    ("evil.example:5001", False), ("localhost.evil.example", False), ("127.0.0.1.nip.io", False),
])
def test_host_header_check(worker, host, allowed):
    with serving(worker) as server:
        status, _, body = request(server, "GET", "/api/extra/version", headers={"Host": host})
        assert (status == 200) == allowed
        if not allowed:
            assert status == 403 and "DNS rebinding" in body["detail"]["msg"]
            status, _, body = request(server, "GET", "/v1/models", headers={"Host": host})
            assert status == 403 and "DNS rebinding" in body["error"]["message"]


def test_host_names_the_user_allows():
    policy = SecurityPolicy(allowed_hosts=("writer.lan",))
    assert policy.check_host("writer.lan:5001") is None and policy.check_host("other.lan") is not None
    assert host_name("[::1]:5001") == "::1" and host_name("Example.COM:80") == "example.com"


def test_cors_allows_localhost_pages_and_file_pages_only(worker):
    with serving(worker) as server:
        for origin in ("http://localhost:8000", "http://127.0.0.1:3000", "null"):
            status, headers, _ = request(server, "GET", "/api/extra/version", headers={"Origin": origin})
            assert status == 200 and headers["Access-Control-Allow-Origin"] == origin
        status, headers, _ = request(server, "OPTIONS", "/api/v1/generate", headers={
            "Origin": "http://localhost:8000", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization"})
        assert status == 204 and "Authorization" in headers["Access-Control-Allow-Headers"]
        for method, path in (("OPTIONS", "/api/v1/generate"), ("POST", "/api/v1/generate"), ("GET", "/v1/models")):
            status, headers, _ = request(server, method, path, {"prompt": PROMPT, "max_length": 2},
                                         headers={"Origin": "https://evil.example"})
            assert status == 403 and "Access-Control-Allow-Origin" not in headers, (method, path)
        # no Origin: not a browser page, no CORS headers needed
        status, headers, _ = request(server, "GET", "/api/extra/version")
        assert status == 200 and "Access-Control-Allow-Origin" not in headers


def test_cors_any_origin_when_the_user_allows_it(worker):
    with serving(worker, allow_any_origin=True) as server:
        status, headers, _ = request(server, "GET", "/api/extra/version", headers={"Origin": "https://lite.example"})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    with serving(worker, allowed_origins=("https://lite.example",)) as server:
        status, headers, _ = request(server, "GET", "/api/extra/version", headers={"Origin": "https://lite.example"})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://lite.example"


def test_body_size_and_n_caps(worker):
    with serving(worker, max_body_bytes=1000, max_n=2) as server:
        status, _, body = request(server, "POST", "/api/v1/generate", {"prompt": "x" * 2000})
        assert status == 413 and "too big" in body["detail"]["msg"]
        status, _, body = request(server, "POST", "/v1/completions", {"prompt": "x" * 2000})
        assert status == 413 and body["error"]["type"] == "invalid_request_error"
        status, _, body = request(server, "POST", "/v1/completions", {"prompt": PROMPT, "n": 3, "max_tokens": 2})
        assert status == 400 and body["error"]["param"] == "n"


def test_unknown_paths_and_methods(worker):
    with serving(worker) as server:
        status, _, body = request(server, "GET", "/api/v1/nothing")
        assert status == 404 and body["detail"]["type"] == "not_found"
        status, _, body = request(server, "GET", "/v1/completions")
        assert status == 405 and body["error"]["message"].startswith("/v1/completions accepts POST")
        # KoboldCpp matches on the end of the path: a prefix before a known route still works
        assert request(server, "GET", "/proxy/v1/models")[0] == 200


def test_keyless_abort_from_this_machine_only_when_it_can_mean_one_generation(worker):
    """SillyTavern aborts without the key and without a genkey: accepted from loopback when
    exactly one generation runs (or for the running job's genkey), refused while another waits."""
    import threading

    from test_server_support import SlowWorker, wait_until
    slow = SlowWorker(worker, delay=0.05)
    key = {"X-Api-Key": "s3cret"}
    with serving(slow, api_key="s3cret") as server:
        first = {"prompt": PROMPT, "max_length": 80, "genkey": "KCPP4242", "logit_bias": {"0": -100}}
        second = {**first, "genkey": "KCPP5353"}
        threads = [threading.Thread(target=request, args=(server, "POST", "/api/v1/generate", body),
                                    kwargs={"headers": key}) for body in (first, second)]
        threads[0].start()
        assert slow.started.wait(10)
        threads[1].start()
        assert wait_until(lambda: server.queue.waiting == 1)
        assert request(server, "POST", "/api/extra/abort", raw=b"")[0] == 401      # two jobs: whose?
        assert request(server, "POST", "/api/extra/abort", {"genkey": "KCPP0000"})[0] == 401
        assert request(server, "POST", "/api/extra/abort", {"genkey": "KCPP5353"})[0] == 401  # not running
        status, _, reply = request(server, "POST", "/api/extra/abort", {"genkey": "KCPP4242"})
        assert status == 200 and reply["success"] == "true"
        threads[0].join(30)
        assert wait_until(lambda: server.queue.alone)
        status, _, reply = request(server, "POST", "/api/extra/abort", raw=b"")    # one job: that one
        assert status == 200 and reply["success"] == "true"
        threads[1].join(30)
        assert [d.stop_reason for d in slow.finished] == ["cancelled", "cancelled"]
        assert request(server, "POST", "/api/extra/abort", raw=b"")[0] == 401      # nothing runs
