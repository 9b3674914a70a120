"""An HTTP server over a `Predictor`: dynamic batching across requests, Prometheus metrics, graceful shutdown.

    POST /predict  {"texts": [...], "text_pairs": [...]}  ->  {"predictions": [{label, probabilities, ...}, ...]}
    GET  /healthz  ->  the model folder, precision and labels (503 while shutting down)
    GET  /metrics  ->  Prometheus text: requests, texts, batch sizes, queue wait, latency, inference time, queue depth

The texts of all requests go into one bounded queue. A batcher takes up to `max_batch_size` of them, waiting at most
`max_delay_ms` after the first one was queued, as soon as one of `workers` threads is free; each thread runs its
batches on its own clone of the one loaded predictor (weights shared), so oneDNN's per-thread state is never shared.
A batch's predictions are those `Predictor.predict` gives the same texts. A request that would take the queue past
`max_queue` texts gets 503 and `Retry-After` at once, instead of waiting behind a backlog it cannot see.
On shutdown (the ASGI lifespan's end, after uvicorn has answered every request it accepted) the queue is drained
and the worker threads stop.

Starlette and uvicorn: one asyncio event loop parses requests and forms batches while Paddle Inference runs in the
worker threads; prometheus_client: the text format Prometheus scrapes, in a registry per app.
Imports neither PaddleNLP nor PaddleSlim.

Example:
    app = create_app(Predictor("deploy/mr_int8", threads=1), ServerConfig(workers=2))
    # serve it with uvicorn, as tools/serve.py does
"""
import asyncio
import contextlib
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ernie_qat.deploy.folder import DeployError
from ernie_qat.deploy.predictor import check_texts
from ernie_qat.errors import UserError, did_you_mean

logger = logging.getLogger(__name__)

ENDPOINTS = ("/predict", "/healthz", "/metrics")
REQUEST_KEYS = ("texts", "text_pairs")
RETRY_AFTER_SECONDS = 1  # what a 503 asks the client to wait: a full queue drains within a few batches
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds


@dataclass
class ServerConfig:
    """How the server batches texts and which requests it admits.

    Raises:
        UserError: a field out of range, naming it.
    """
    workers: int = 1  # threads running batches, each with its own clone of the predictor
    max_batch_size: int = 32  # texts per batch
    max_delay_ms: float = 5.0  # how long a batch waits for more texts after its first one was queued
    max_queue: int = 1024  # texts waiting for a batch; a request that would queue more gets 503
    max_body_bytes: int = 1 << 20  # a larger request body gets 413
    max_texts: int = 256  # texts in one request; more get 413
    warmup: bool = False  # each worker runs every length bucket once before the server takes requests

    def __post_init__(self):
        for name in ("workers", "max_batch_size", "max_queue", "max_body_bytes", "max_texts"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise UserError(f"`{name}` must be an integer >= 1, got {value!r}")
        if isinstance(self.max_delay_ms, bool) or not isinstance(self.max_delay_ms, (int, float)) or not (
                0 <= self.max_delay_ms < math.inf):
            raise UserError(f"`max_delay_ms` must be a finite number >= 0, got {self.max_delay_ms!r}")
        if self.max_texts > self.max_queue:
            raise UserError(f"`max_texts` ({self.max_texts}) must be at most `max_queue` ({self.max_queue}): "
                            "a request of max_texts texts could never be queued")


class Refusal(Exception):
    """A request the server answers with an error status and `{"error": message}`."""

    def __init__(self, status: int, message: str, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.headers = status, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"error": str(self)}, status_code=self.status, headers=self.headers)


class Metrics:
    """The server's Prometheus metrics, in a registry of their own (so that one process can build several apps)."""

    def __init__(self, max_batch_size: int):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("ernie_qat_requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "code"], registry=registry)
        self.in_progress = Gauge("ernie_qat_requests_in_progress", "HTTP requests received and not yet answered",
                                 ["endpoint"], registry=registry)
        self.latency = Histogram("ernie_qat_request_duration_seconds", "Time from a request to its response",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
        self.texts = Counter("ernie_qat_texts", "Texts queued for prediction", registry=registry)
        self.batch_size = Histogram("ernie_qat_batch_size", "Texts per batch run on a worker",
                                    buckets=_batch_buckets(max_batch_size), registry=registry)
        self.queue_wait = Histogram("ernie_qat_queue_wait_seconds", "Time a text waits in the queue for its batch",
                                    buckets=LATENCY_BUCKETS, registry=registry)
        self.inference = Histogram("ernie_qat_inference_seconds", "Predictor time per batch (tokenizing included)",
                                   buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_depth = Gauge("ernie_qat_queue_depth", "Texts waiting for a batch", registry=registry)


def _batch_buckets(max_batch_size: int) -> List[float]:
    """Powers of two up to `max_batch_size`, and it."""
    return sorted({2 ** k for k in range(max_batch_size.bit_length()) if 2 ** k <= max_batch_size} | {max_batch_size})


@dataclass
class _Item:
    text: str
    pair: Optional[str]
    future: asyncio.Future  # the text's Prediction
    queued: float  # loop time when it was queued


class Batcher:
    """One bounded queue of texts, batches of up to `max_batch_size` formed from it, run on `workers` threads.

    `start` and `stop` run in the event loop that serves the requests (the app's lifespan).
    """

    def __init__(self, predictor, config: ServerConfig, metrics: Metrics):
        self.predictor, self.config, self.metrics = predictor, config, metrics
        self.draining = False  # shutdown has begun: /healthz answers 503
        self._queue: Optional[asyncio.Queue] = None
        self._task: Optional[asyncio.Task] = None
        self._running = set()  # tasks of the batches on the workers

    async def start(self) -> None:
        """Clone the predictor for each worker thread (warmed up there if asked) and start forming batches."""
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self.config.max_queue)
        self.metrics.queue_depth.set_function(self._queue.qsize)
        self._idle = asyncio.Queue()  # (executor, predictor) of the workers that run no batch
        self._workers = [(ThreadPoolExecutor(1, thread_name_prefix=f"predict-{i}"), self.predictor.clone())
                         for i in range(self.config.workers)]
        if self.config.warmup:
            await asyncio.gather(*(loop.run_in_executor(executor, predictor.warm_up)
                                   for executor, predictor in self._workers))
        for worker in self._workers:
            self._idle.put_nowait(worker)
        self._task = asyncio.create_task(self._form_batches())

    async def stop(self) -> None:
        """Wait until every queued text has its prediction, then stop the batcher and the worker threads."""
        self.draining = True
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for executor, _ in self._workers:
            executor.shutdown(wait=True)

    def submit(self, texts: Sequence[str], pairs: Sequence[Optional[str]]) -> List[asyncio.Future]:
        """Queue the texts of one request: a future per text, of its Prediction.

        Raises:
            Refusal: 503, the queue has no room for all of them (none is queued).
        """
        if self._queue is None:
            raise RuntimeError("the batcher has not started: run the app's lifespan (uvicorn does; enter Starlette's "
                               "TestClient with `with`)")
        room = self.config.max_queue - self._queue.qsize()
        if len(texts) > room:
            raise Refusal(503, f"the queue is full: {self._queue.qsize()} texts wait for a batch and "
                               f"`max_queue` is {self.config.max_queue}, so there is no room for this request's "
                               f"{len(texts)}; retry after {RETRY_AFTER_SECONDS} s",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        loop = asyncio.get_running_loop()
        now, futures = loop.time(), []
        for text, pair in zip(texts, pairs):
            future = loop.create_future()
            self._queue.put_nowait(_Item(text, pair, future, now))
            futures.append(future)
        self.metrics.texts.inc(len(texts))
        return futures

    async def _form_batches(self) -> None:
        """Forever: wait for a free worker, then for a batch, and run it there."""
        while True:
            worker = await self._idle.get()
            batch = await self._next_batch()
            task = asyncio.create_task(self._run(worker, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> List[_Item]:
        """The next queued text and those queued after it, up to `max_batch_size` texts or `max_delay_ms` after the
        first was queued."""
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = batch[0].queued + self.config.max_delay_ms / 1000
        while len(batch) < self.config.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            wait = deadline - loop.time()
            if wait <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), wait))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self, worker, batch: List[_Item]) -> None:
        """Predict a batch on `worker` and hand each text its Prediction (or the exception)."""
        executor, predictor = worker
        loop = asyncio.get_running_loop()
        live = [item for item in batch if not item.future.done()]  # a cancelled request's texts are skipped
        try:
            if not live:
                return
            start = loop.time()
            for item in live:
                self.metrics.queue_wait.observe(start - item.queued)
            self.metrics.batch_size.observe(len(live))
            texts, pairs = [item.text for item in live], [item.pair for item in live]
            results = await loop.run_in_executor(executor, self._predict, predictor, texts, pairs)
            for item, result in zip(live, results):
                if item.future.done():
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
        finally:
            self._idle.put_nowait(worker)
            for _ in batch:
                self._queue.task_done()

    def _predict(self, predictor, texts: List[str], pairs: List[Optional[str]]) -> list:
        """In a worker thread: the batch's Predictions; if the batch fails, each text's alone, so that a text the
        predictor cannot take fails its own request only (its exception in place of its Prediction)."""
        try:
            with self.metrics.inference.time():
                return predictor.predict(texts, pairs)
        except Exception as exc:  # any failure: retried one text at a time
            if len(texts) == 1:
                logger.error("prediction failed: %s: %s", type(exc).__name__, exc)
                return [exc]
        return [self._predict(predictor, [text], [pair])[0] for text, pair in zip(texts, pairs)]


def parse_request(body: bytes):
    """`texts` and `text_pairs` (one string or None per text) of a /predict body.

    Raises:
        Refusal: 400, the body is not a JSON object with a list of strings `texts` and optionally `text_pairs`.
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep for the parser
        raise Refusal(400, f"the request body is not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise Refusal(400, 'the request body must be a JSON object {"texts": [...]}, '
                           f"got {type(payload).__name__}")
    unknown = sorted(set(payload) - set(REQUEST_KEYS))
    if unknown:
        raise Refusal(400, f"unknown key `{unknown[0]}`{did_you_mean(unknown[0], REQUEST_KEYS)} "
                           "(a request has `texts` and optionally `text_pairs`)")
    if "texts" not in payload:
        raise Refusal(400, 'missing `texts`: send {"texts": ["a text", ...]}')
    try:
        return check_texts(payload["texts"], payload.get("text_pairs"))
    except DeployError as exc:
        raise Refusal(400, str(exc)) from None


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to pass `limit` bytes."""
    too_large = Refusal(413, f"the request body is larger than `max_body_bytes` ({limit} bytes); "
                             "send fewer or shorter texts per request")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:
        raise Refusal(400, "the client disconnected before sending the whole body") from None
    return bytes(body)


class _Measured:
    """ASGI middleware: count and time every HTTP request, by endpoint and status code."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        status = 500  # unless a response starts: an exception the app did not handle

        async def send_recording_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        self.metrics.in_progress.labels(endpoint).inc()
        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            self.metrics.in_progress.labels(endpoint).dec()
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


def create_app(predictor, config: Optional[ServerConfig] = None) -> Starlette:
    """The ASGI app serving `predictor` (a loaded `Predictor`, or anything with its `clone`, `predict`, `folder`,
    `precision` and `labels`). `app.state` holds `config`, `metrics` and `batcher` (whose `draining` flag a server
    sets when a shutdown signal comes)."""
    config = config or ServerConfig()
    metrics = Metrics(config.max_batch_size)
    batcher = Batcher(predictor, config, metrics)

    async def predict(request: Request) -> Response:
        try:
            texts, pairs = parse_request(await _read_body(request, config.max_body_bytes))
            if len(texts) > config.max_texts:
                raise Refusal(413, f"{len(texts)} texts in one request, more than `max_texts` ({config.max_texts}); "
                                   "split them into several requests")
            futures = batcher.submit(texts, pairs)
        except Refusal as refusal:
            return refusal.response()
        try:
            predictions = await asyncio.gather(*futures)
        except Exception as exc:  # the predictor failed on one of the texts: 500, naming the failure
            return Refusal(500, f"prediction failed: {type(exc).__name__}: {exc}").response()
        return JSONResponse({"predictions": [asdict(p) for p in predictions]})

    async def healthz(request: Request) -> Response:
        status = "shutting down" if batcher.draining else "ok"
        return JSONResponse({"status": status, "model": str(predictor.folder), "precision": predictor.precision,
                             "labels": list(predictor.labels.labels), "workers": config.workers},
                            status_code=503 if batcher.draining else 200)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/healthz", healthz),
                            Route("/metrics", prometheus)],
                    middleware=[Middleware(_Measured, metrics=metrics)], lifespan=lifespan)
    app.state.config, app.state.metrics, app.state.batcher = config, metrics, batcher
    return app
