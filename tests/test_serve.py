"""The HTTP server (ernie_qat.deploy.server, tools/serve.py) and tools/loadtest.py on a tiny FP32 export: predictions
as Predictor.predict gives them, batching across requests, refusals with their messages, metrics, shutdown under load.

In-process tests run the app's lifespan and talk to it through httpx's ASGI transport; the subprocess tests start
tools/serve.py on a free 127.0.0.1 port."""
import asyncio
import json
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import deploy_fixtures
from conftest import ROOT, one_error_line, run_here
from ernie_qat.deploy import Predictor
from ernie_qat.deploy.server import ServerConfig, create_app
from ernie_qat.errors import UserError

NO_TOKENS = "\x00\x01"
EDGE_TEXTS = ["", "  ", NO_TOKENS, "good " * 100, "a very nice movie and the acting was superb"]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """tests/deploy_fixtures.py: a one-layer toy model's FP32 export, exported on Paddle 2.6.2, and its task."""
    return deploy_fixtures.fixtures(tmp_path_factory)


@pytest.fixture(scope="module")
def task(fixtures):
    return {"dir": fixtures / "toy"}


@pytest.fixture(scope="module")
def deploy(fixtures):
    return fixtures / "fp32"


@pytest.fixture(scope="module")
def predictor(deploy):
    return Predictor(deploy, threads=1)


@pytest.fixture(scope="module")
def texts(task):
    rows = (task["dir"] / "test.tsv").read_text().splitlines()[1:]
    return [row.split("\t", 1)[1] for row in rows] + EDGE_TEXTS


def serve(app, scenario):
    """Run the coroutine function `scenario(client)` against `app` in this process, lifespan included."""
    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://serve", timeout=30) as client:
                return await scenario(client)
    return asyncio.run(main())


def metric(app, name, **labels):
    return app.state.metrics.registry.get_sample_value(name, labels) or 0


def as_dicts(predictions):
    return [asdict(p) for p in predictions]


def assert_same_predictions(got, expected):
    """Labels, errors and truncation equal; probabilities within 1e-6 (a batch of other texts may round otherwise)."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert (g["label"], g["error"], g["truncated"]) == (e["label"], e["error"], e["truncated"])
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-6)


# -- Predictions and batching ----------------------------------------------------------------------------------


def test_predictions_are_those_of_predictor_predict(predictor, texts):
    app = create_app(predictor, ServerConfig(workers=2, max_batch_size=128, max_delay_ms=1))
    pairs = [None, "the plot", None, "", "good"] * 2

    async def scenario(client):
        whole = await client.post("/predict", json={"texts": texts})
        with_pairs = await client.post("/predict", json={"texts": texts[:10], "text_pairs": pairs})
        alone = await asyncio.gather(*(client.post("/predict", json={"texts": [text]}) for text in texts))
        empty = await client.post("/predict", json={"texts": []})
        return whole, with_pairs, alone, empty

    whole, with_pairs, alone, empty = serve(app, scenario)
    assert whole.status_code == 200 and whole.json() == {"predictions": as_dicts(predictor.predict(texts))}
    assert with_pairs.json()["predictions"] == as_dicts(predictor.predict(texts[:10], pairs))
    assert {r.status_code for r in alone} == {200}
    assert_same_predictions([r.json()["predictions"][0] for r in alone], as_dicts(predictor.predict(texts)))
    assert empty.json() == {"predictions": []}
    assert whole.json()["predictions"][-2]["truncated"] and whole.json()["predictions"][-5]["error"] == "empty text"


def test_concurrent_requests_share_batches(predictor, texts):
    app = create_app(predictor, ServerConfig(max_batch_size=16, max_delay_ms=2000))

    async def scenario(client):
        responses = await asyncio.gather(*(client.post("/predict", json={"texts": [text]}) for text in texts[:32]))
        start = time.perf_counter()
        await client.post("/predict", json={"texts": ["a lone text"]})  # waits for company until max_delay_ms
        return responses, time.perf_counter() - start

    responses, lone = serve(app, scenario)
    assert_same_predictions([r.json()["predictions"][0] for r in responses], as_dicts(predictor.predict(texts[:32])))
    # 32 texts in 2 full batches, then the lone text in its own, sent when its 2 s were up
    assert metric(app, "ernie_qat_batch_size_count") == 3 and metric(app, "ernie_qat_batch_size_sum") == 33
    assert metric(app, "ernie_qat_batch_size_bucket", le="8.0") == 1
    assert 2.0 <= lone < 10
    assert metric(app, "ernie_qat_queue_wait_seconds_count") == 33 and metric(app, "ernie_qat_texts_total") == 33


class Failing:
    """A predictor that fails on any batch holding the text `poison`."""

    def __init__(self, inner, poison="poison"):
        self.inner, self.poison = inner, poison

    def clone(self):
        return Failing(self.inner.clone(), self.poison)

    def predict(self, texts, text_pairs=None):
        if self.poison in texts:
            raise RuntimeError("the model cannot take this text")
        return self.inner.predict(texts, text_pairs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_text_the_predictor_fails_on_fails_its_own_request_only(predictor, texts):
    app = create_app(Failing(predictor), ServerConfig(max_batch_size=8, max_delay_ms=2000))

    async def scenario(client):
        return await asyncio.gather(*(client.post("/predict", json={"texts": [text]})
                                      for text in texts[:3] + ["poison"] + texts[3:7]))

    responses = serve(app, scenario)
    assert metric(app, "ernie_qat_batch_size_count") == 1  # all eight in one batch, which failed as a whole
    assert [r.status_code for r in responses] == [200] * 3 + [500] + [200] * 4
    assert responses[3].json() == {"error": "prediction failed: RuntimeError: the model cannot take this text"}
    assert_same_predictions([r.json()["predictions"][0] for r in responses[:3] + responses[4:]],
                            as_dicts(predictor.predict(texts[:7])))


# -- Refusals --------------------------------------------------------------------------------------------------

BAD_REQUESTS = [
    (b"{", r"the request body is not valid JSON \(Expecting property name"),
    (b"[" * 100_000, r"the request body is not valid JSON \(maximum recursion depth"),
    (b"\xff\xfe\x00", r"the request body is not valid JSON"),
    (b'["good film"]', r'the request body must be a JSON object \{"texts": \[...\]\}, got list'),
    (b'{"text": ["good"]}', r"unknown key `text`; did you mean `texts`\? \(a request has `texts` and optionally"),
    (b'{"text_pairs": ["x"]}', r'missing `texts`: send \{"texts": \["a text", ...\]\}'),
    (b'{"texts": "good film"}', r"`texts` must be a list of strings, got one str; pass \[text\] for a single text"),
    (b'{"texts": null}', r"`texts` must be a list of strings, got NoneType"),
    (b'{"texts": 3}', r"`texts` must be a list of strings, got int"),
    (b'{"texts": {"good film": 1}}', r"`texts` must be a list of strings, got a dict"),
    (b'{"texts": ["good", 3]}', r"`texts\[1\]` must be a string, got int"),
    (b'{"texts": ["good", ["bad"]]}', r"`texts\[1\]` must be a string, got list"),
    (b'{"texts": ["good"], "text_pairs": [true]}', r"`text_pairs\[0\]` must be a string, got bool"),
    (b'{"texts": ["a", "b", "c"], "text_pairs": ["x"]}', r"3 texts but 1 text_pairs: give one pair \(or None\)"),
]


def test_malformed_requests_get_400_with_a_message(predictor):
    app = create_app(predictor)

    async def scenario(client):
        return [await client.post("/predict", content=body) for body, _ in BAD_REQUESTS]

    for response, (body, message) in zip(serve(app, scenario), BAD_REQUESTS):
        assert response.status_code == 400, body
        assert response.json().keys() == {"error"}
        assert re.match(message, response.json()["error"]), response.json()
    assert metric(app, "ernie_qat_requests_total", endpoint="/predict", code="400") == len(BAD_REQUESTS)
    assert metric(app, "ernie_qat_texts_total") == 0


def test_a_text_the_model_cannot_read_gets_its_error_in_a_200(predictor):
    app = create_app(predictor)

    async def scenario(client):
        return await client.post("/predict", content=b'{"texts": ["good \\ud800 film", "good film", ""]}')

    response = serve(app, scenario)
    assert response.status_code == 200
    errors = [p["error"] for p in response.json()["predictions"]]
    assert errors == ["the text is not valid Unicode (a lone surrogate)", None, "empty text"]


def test_requests_over_the_limits_get_413(predictor):
    app = create_app(predictor, ServerConfig(max_body_bytes=200, max_texts=3))

    async def chunks():  # no Content-Length: the body is refused once 200 bytes have come
        yield b'{"texts": ['
        for _ in range(40):
            yield b'"good film",'

    async def scenario(client):
        declared = await client.post("/predict", json={"texts": ["good film " * 30]})
        streamed = await client.post("/predict", content=chunks())
        many = await client.post("/predict", json={"texts": ["good"] * 4})
        enough = await client.post("/predict", json={"texts": ["good"] * 3})
        return declared, streamed, many, enough

    declared, streamed, many, enough = serve(app, scenario)
    too_large = ("the request body is larger than `max_body_bytes` (200 bytes); "
                 "send fewer or shorter texts per request")
    assert (declared.status_code, declared.json()) == (413, {"error": too_large})
    assert (streamed.status_code, streamed.json()) == (413, {"error": too_large})
    assert (many.status_code, many.json()) == (413, {"error": "4 texts in one request, more than `max_texts` (3); "
                                                              "split them into several requests"})
    assert enough.status_code == 200


class Held:
    """A predictor whose batches signal `started` and wait for `release` before running."""

    def __init__(self, inner, started: threading.Event, release: threading.Event):
        self.inner, self.started, self.release = inner, started, release

    def clone(self):
        return Held(self.inner.clone(), self.started, self.release)

    def predict(self, texts, text_pairs=None):
        self.started.set()
        assert self.release.wait(30)
        return self.inner.predict(texts, text_pairs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def until(condition, seconds=10.0):
    deadline = time.perf_counter() + seconds
    while not condition():
        assert time.perf_counter() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_a_full_queue_gets_503_with_retry_after(predictor):
    started, release = threading.Event(), threading.Event()
    app = create_app(Held(predictor, started, release),
                     ServerConfig(max_batch_size=2, max_delay_ms=0, max_queue=4, max_texts=4))

    async def scenario(client):
        running = asyncio.create_task(client.post("/predict", json={"texts": ["good", "bad"]}))
        await until(started.is_set)  # the only worker holds these two
        queued = asyncio.create_task(client.post("/predict", json={"texts": ["nice", "sad", "fine", "dull"]}))
        await until(lambda: metric(app, "ernie_qat_queue_depth") == 4)
        refused = await client.post("/predict", json={"texts": ["great"]})
        health = await client.get("/healthz")
        release.set()
        return await running, await queued, refused, health

    running, queued, refused, health = serve(app, scenario)
    assert (refused.status_code, refused.headers["retry-after"]) == (503, "1")
    assert refused.json() == {"error": "the queue is full: 4 texts wait for a batch and `max_queue` is 4, so there is "
                                       "no room for this request's 1; retry after 1 s"}
    assert health.status_code == 200
    assert running.json()["predictions"] == as_dicts(predictor.predict(["good", "bad"]))
    assert queued.json()["predictions"] == as_dicts(predictor.predict(["nice", "sad", "fine", "dull"]))
    assert metric(app, "ernie_qat_texts_total") == 6  # the refused text was never queued


@pytest.mark.parametrize("field, value, message", [
    ("workers", 0, "`workers` must be an integer >= 1, got 0"),
    ("max_batch_size", 2.0, "`max_batch_size` must be an integer >= 1, got 2.0"),
    ("max_delay_ms", -1, "`max_delay_ms` must be a finite number >= 0, got -1"),
    ("max_delay_ms", float("nan"), "`max_delay_ms` must be a finite number >= 0, got nan"),
    ("max_texts", 2000, "`max_texts` (2000) must be at most `max_queue` (1024): a request of max_texts texts could "
                        "never be queued"),
])
def test_server_config_is_checked(field, value, message):
    with pytest.raises(UserError) as error:
        ServerConfig(**{field: value})
    assert str(error.value) == message


# -- Health and metrics ----------------------------------------------------------------------------------------


def test_healthz_names_the_model_and_turns_503_when_shutting_down(predictor, deploy):
    app = create_app(predictor, ServerConfig(workers=2))

    async def scenario(client):
        up = await client.get("/healthz")
        app.state.batcher.draining = True  # what tools/serve.py does when SIGTERM comes
        return up, await client.get("/healthz")

    up, draining = serve(app, scenario)
    assert (up.status_code, up.json()) == (200, {"status": "ok", "model": str(deploy), "precision": "fp32",
                                                 "labels": ["neg", "pos"], "workers": 2})
    assert (draining.status_code, draining.json()["status"]) == (503, "shutting down")


def test_metrics_count_the_requests_sent(predictor):
    app, other = create_app(predictor), create_app(predictor)  # a registry each: no duplicate names

    async def scenario(client):
        for texts in (["good"], ["bad", "fine"], ["dull", "nice", "sad"]):
            await client.post("/predict", json={"texts": texts})
        await client.post("/predict", content=b"{")
        await client.get("/healthz")
        await client.get("/nowhere")
        return await client.get("/metrics")

    response = serve(app, scenario)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("ernie_qat_requests_total", endpoint="/predict", code="200") == 3
    assert value("ernie_qat_requests_total", endpoint="/predict", code="400") == 1
    assert value("ernie_qat_requests_total", endpoint="/healthz", code="200") == 1
    assert value("ernie_qat_requests_total", endpoint="other", code="404") == 1
    assert value("ernie_qat_request_duration_seconds_count", endpoint="/predict") == 4
    assert value("ernie_qat_requests_in_progress", endpoint="/predict") == 0
    assert value("ernie_qat_requests_in_progress", endpoint="/metrics") == 1  # this scrape
    assert value("ernie_qat_texts_total") == 6 and value("ernie_qat_batch_size_sum") == 6
    assert value("ernie_qat_queue_wait_seconds_count") == 6
    assert value("ernie_qat_inference_seconds_count") == value("ernie_qat_batch_size_count") >= 1
    assert value("ernie_qat_queue_depth") == 0
    assert metric(other, "ernie_qat_requests_total", endpoint="/predict", code="200") == 0


# -- tools/serve.py and tools/loadtest.py ----------------------------------------------------------------------


def start_server(deploy, *args):
    """tools/serve.py on a free 127.0.0.1 port: (process, URL); the URL is the line it prints when ready."""
    process = subprocess.Popen([sys.executable, str(ROOT / "tools" / "serve.py"), "--model", str(deploy), "--port", "0",
                                *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 120)
    if not ready:
        process.kill()
        pytest.fail("tools/serve.py printed no URL within 120 s")
    url = process.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        process.kill()
        pytest.fail(f"tools/serve.py: {url!r} {process.communicate(timeout=10)[1]}")
    return process, url


def stop(process, timeout=60):
    """SIGTERM `process` if it runs; its exit code and stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, err


def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(deploy, predictor, texts):
    process, url = start_server(deploy, "--max-delay-ms", 20, "--max-batch-size", 8, "--threads", 1)
    expected = {text: asdict(p) for text, p in zip(texts, predictor.predict(texts))}
    answered, refused, disconnected, wrong = [], [], [], []
    sigterm_at = []

    async def user(client, index):
        for n in range(100):  # bounded: at most 100 requests per user, or until the server is gone
            text = texts[(index * 7 + n) % len(texts)]
            try:
                response = await client.post("/predict", json={"texts": [text]})
            except httpx.ConnectError:  # the listening socket closed: not accepted
                refused.append(text)
                return
            except (httpx.RemoteProtocolError, httpx.ReadError):  # an idle connection closed before it was read
                disconnected.append(text)
                return
            answered.append(time.perf_counter())
            if response.status_code != 200:
                wrong.append((response.status_code, response.text))
            else:
                got = response.json()["predictions"]
                if len(got) != 1 or got[0]["label"] != expected[text]["label"] or got[0]["probabilities"] != (
                        pytest.approx(expected[text]["probabilities"], abs=1e-6)):
                    wrong.append((text, got))
            if len(answered) == 60 and not sigterm_at:
                sigterm_at.append(time.perf_counter())
                process.send_signal(signal.SIGTERM)

    async def load():
        limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            await asyncio.wait_for(asyncio.gather(*(user(client, i) for i in range(40))), 60)

    try:
        asyncio.run(load())
        assert sigterm_at  # sent after the 60th answer
        start = time.perf_counter()
        _, err = process.communicate(timeout=30)  # no second SIGTERM: one during the interpreter's exit would kill it
        code = process.returncode
    finally:
        if process.poll() is None:
            process.kill()
    assert not wrong
    assert code == 0 and time.perf_counter() - start < 30, err
    after = sum(t > sigterm_at[0] for t in answered)
    assert after >= 1  # requests in flight when SIGTERM came were answered
    assert refused or disconnected  # the server stopped taking requests before the users were done
    # the server's own count: every request it received was answered, and each of those answers reached its client
    assert f"stopped: {len(answered)} /predict requests answered, 0 unanswered" in err, err
    print(f"answered {len(answered)} ({after} after SIGTERM), refused {len(refused)}, "
          f"disconnected {len(disconnected)}")


@pytest.fixture(scope="module")
def server(deploy):
    process, url = start_server(deploy, "--workers", 2, "--threads", 1, "--warmup")
    yield url
    code, err = stop(process)
    assert code == 0, err


def test_loadtest_reports_each_concurrency(server, task, tmp_path, monkeypatch, capsys):
    out = tmp_path / "load.json"
    code, stdout, err = run_here("loadtest.py", monkeypatch, capsys, "--url", server,
                                 "--data", task["dir"] / "test.tsv", "--concurrency", 1, 4, "--requests", 24,
                                 "--texts-per-request", 2, "--json", out)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["server"]["status"] == "ok" and report["texts_per_request"] == 2
    assert [level["concurrency"] for level in report["levels"]] == [1, 4]
    for level in report["levels"]:
        assert (level["requests"], level["ok"], level["texts"], level["errors"]) == (24, 24, 48, {})
        latency = level["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] and level["texts_per_second"] > 0
    assert "texts/s" in stdout and stdout.count("none") == 2


def test_serve_and_loadtest_refuse_bad_arguments_with_one_line(server, deploy, task, tmp_path, monkeypatch, capsys):
    data = task["dir"] / "test.tsv"
    cases = [
        ("loadtest.py", ["--url", "http://10.1.2.3:8000", "--data", data],
         "error: `--url` must point at this machine (127.0.0.1, localhost or [::1]), got host '10.1.2.3'"),
        ("loadtest.py", ["--url", "http://127.0.0.1:1", "--data", data], "error: cannot reach a server at"),
        ("loadtest.py", ["--url", server, "--data", data, "--timeout", "0"], "error: `--timeout` must be a positive"),
        ("serve.py", ["--model", tmp_path / "nowhere", "--port", "0"], "error: deployment folder"),
        ("serve.py", ["--model", deploy, "--port", server.rsplit(":", 1)[1]], "error: cannot listen on 127.0.0.1:"),
        ("serve.py", ["--model", deploy, "--port", "0", "--max-delay-ms", "-1"],
         "error: `max_delay_ms` must be a finite number >= 0, got -1.0"),
    ]
    for tool, args, message in cases:
        line = one_error_line(*run_here(tool, monkeypatch, capsys, *args)[::2])
        assert line.startswith(message), line

