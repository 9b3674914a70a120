"""Load-test a server of tools/serve.py: throughput, latency percentiles and errors at each concurrency.

    python tools/loadtest.py --url http://127.0.0.1:8000 --data mr:test --concurrency 1 4 16 --requests 400
    python tools/loadtest.py --url http://127.0.0.1:8000 --data texts.txt --texts-per-request 8 --json load.json

For each concurrency, --requests POST /predict requests are sent by that many concurrent clients over kept-alive
connections, replaying the data's texts in order (--texts-per-request each, wrapping around). Reported per level:
texts per second (texts answered with 200 / wall time), p50/p90/p99 latency of the requests answered with 200, and
errors by kind (HTTP status, or the connection error). Data: a built-in split (`mr:test`), a .tsv/.csv/.jsonl file
(`text`, optional `text_pair`), or plain text, one text per line. Loopback addresses only; each level stops after
--requests requests or --max-seconds, whichever comes first; a request waits at most --timeout seconds.
"""
import argparse
import asyncio
import ipaddress
import math
import time
from collections import Counter

from ernie_qat import cli
from ernie_qat.errors import UserError

LOOPBACK_NAMES = ("localhost",)


def loopback_url(url: str) -> str:
    """`url` if its host is a loopback address (127.0.0.0/8, ::1, localhost).

    Raises:
        UserError: any other host; the load test sends traffic to this machine only.
    """
    import httpx
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL as exc:
        raise UserError(f"`--url` {url!r} is not a URL ({exc})") from None
    try:
        loopback = host in LOOPBACK_NAMES or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UserError(f"`--url` must point at this machine (127.0.0.1, localhost or [::1]), got host {host!r}")
    return url.rstrip("/")


def read_texts(spec: str) -> list:
    """[(text, text_pair or None)] of a built-in split, a table file or a plain-text file (non-empty lines)."""
    from ernie_qat.data.loader import FORMATS, DataError, read_examples
    from ernie_qat.data.sources import data_file
    path = data_file(spec)
    if path.suffix.lower() in FORMATS:
        return [(e.text, e.text_pair) for e in read_examples(path, require_label=False)]
    try:
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise DataError(f"{spec}: cannot read: {exc.strerror}") from None
    texts = [(line.strip(), None) for line in lines if line.strip()]
    if not texts:
        raise DataError(f"{spec}: no texts")
    return texts


def payloads(texts: list, count: int, per_request: int) -> list:
    """`count` request bodies taking the texts in order, `per_request` each, wrapping around."""
    bodies = []
    for i in range(count):
        chosen = [texts[(i * per_request + j) % len(texts)] for j in range(per_request)]
        body = {"texts": [text for text, _ in chosen]}
        if any(pair is not None for _, pair in chosen):
            body["text_pairs"] = [pair for _, pair in chosen]
        bodies.append(body)
    return bodies


def percentile(sorted_values: list, q: float) -> float:
    """The nearest-rank q-th percentile of sorted values (NaN for none)."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


async def run_level(client, bodies: list, concurrency: int, max_seconds: float) -> dict:
    """Send `bodies` with `concurrency` concurrent clients; the level's measurements."""
    import httpx
    pending = iter(bodies)
    latencies, errors, texts = [], Counter(), 0
    deadline = time.perf_counter() + max_seconds

    async def client_loop():
        nonlocal texts
        for body in pending:  # one iterator shared by the clients: each body is sent once
            if time.perf_counter() > deadline:
                errors["not sent: --max-seconds"] += 1
                continue
            start = time.perf_counter()
            try:
                response = await client.post("/predict", json=body)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                continue
            if response.status_code != 200:
                errors[f"HTTP {response.status_code}"] += 1
            elif len(response.json().get("predictions", [])) != len(body["texts"]):
                errors["wrong number of predictions"] += 1
            else:
                latencies.append(time.perf_counter() - start)
                texts += len(body["texts"])

    start = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    latencies.sort()
    ms = {f"p{q}": round(percentile(latencies, q) * 1000, 3) if latencies else None for q in (50, 90, 99)}
    return {"concurrency": concurrency, "requests": len(bodies), "ok": len(latencies), "texts": texts,
            "errors": dict(errors), "seconds": round(seconds, 3), "texts_per_second": round(texts / seconds, 2),
            "latency_ms": ms}


async def load_test(url: str, bodies: list, levels: list, timeout: float, max_seconds: float, warmup: int):
    """The server's /healthz answer and a measurement per concurrency level."""
    import httpx
    limits = httpx.Limits(max_connections=max(levels), max_keepalive_connections=max(levels))
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        try:
            health = (await client.get("/healthz")).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise UserError(f"cannot reach a server at {url} ({type(exc).__name__}: {exc}); "
                            "start one with tools/serve.py") from None
        for body in bodies[:warmup]:  # not measured: connections opened, first calls of the kernels made
            await client.post("/predict", json=body)
        return health, [await run_level(client, bodies, n, max_seconds) for n in levels]


def print_table(levels: list) -> None:
    print(f"{'concurrency':>11} {'requests':>8} {'ok':>6} {'texts/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
          "  errors")
    for level in levels:
        ms = {key: "-" if value is None else f"{value:.1f}" for key, value in level["latency_ms"].items()}
        errors = ", ".join(f"{kind}: {n}" for kind, n in level["errors"].items()) or "none"
        print(f"{level['concurrency']:>11} {level['requests']:>8} {level['ok']:>6} {level['texts_per_second']:>9.1f} "
              f"{ms['p50']:>8} {ms['p90']:>8} {ms['p99']:>8}  {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000 (loopback only)")
    parser.add_argument("--data", required=True, help="texts: dataset:split (mr:test), a .tsv/.csv/.jsonl or text file")
    parser.add_argument("--concurrency", type=cli.positive_int, nargs="+", default=[1],
                        help="concurrent clients, a level each (default: 1)")
    parser.add_argument("--requests", type=cli.positive_int, default=200, help="requests per level")
    parser.add_argument("--texts-per-request", type=cli.positive_int, default=1)
    parser.add_argument("--warmup", type=cli.non_negative_int, default=10, help="unmeasured requests first")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="seconds a level may take")
    parser.add_argument("--json", help="write the measurements here too")
    args = cli.parse_args(parser)
    url = loopback_url(args.url)
    for name in ("timeout", "max_seconds"):
        if not 0 < getattr(args, name) < math.inf:
            raise UserError(f"`--{name.replace('_', '-')}` must be a positive number of seconds, "
                            f"got {getattr(args, name)}")

    bodies = payloads(read_texts(args.data), args.requests, args.texts_per_request)
    health, levels = asyncio.run(load_test(url, bodies, args.concurrency, args.timeout, args.max_seconds,
                                           args.warmup))
    print(f"{url}: {health.get('model')} ({health.get('precision')}), {args.texts_per_request} texts per request, "
          f"data {args.data}")
    print_table(levels)
    if args.json:
        from ernie_qat.atomic import write_json
        write_json(args.json, {"url": url, "server": health, "data": args.data, "texts_per_request":
                               args.texts_per_request, "levels": levels})


if __name__ == "__main__":
    cli.run(main)
