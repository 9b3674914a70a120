"""Serve an exported model over HTTP: POST /predict, GET /healthz, GET /metrics (ernie_qat.deploy.server).

    python tools/serve.py --model deploy/mr_int8 [--port 8000] [--workers 2]
    curl -s localhost:8000/predict -d '{"texts": ["a gripping film", "dull and long"]}'

Texts of concurrent requests are batched together: up to --max-batch-size texts, waiting at most --max-delay-ms
after the first; batches run on --workers threads, each with --threads math-library threads (default: the usable
cores shared out among the workers). A request beyond the limits gets 413 (--max-body-bytes, --max-texts), or 503
with Retry-After when --max-queue texts already wait. Prints the server's URL on stdout once it takes requests.
SIGTERM or Ctrl-C: stop accepting connections, answer every request already accepted, exit (0 after SIGTERM).
"""
import argparse
import os
import signal
import socket
import sys

from ernie_qat import cli
from ernie_qat.errors import UserError


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: a free one), for uvicorn to listen on."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets' connections, and without it a
        # response's second write waits for the client's delayed ACK (40 ms per request on a kept-alive connection)
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a deployment folder written by tools/export.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=cli.non_negative_int, default=8000, help="0: a free port (see the URL printed)")
    parser.add_argument("--workers", type=cli.positive_int, default=1, help="threads running batches")
    parser.add_argument("--threads", type=cli.positive_int,
                        help="math-library threads per worker; default: usable cores // workers, at least 1")
    parser.add_argument("--max-batch-size", type=cli.positive_int, default=32, help="texts per batch")
    parser.add_argument("--max-delay-ms", type=float, default=5.0,
                        help="how long a batch waits for more texts after its first")
    parser.add_argument("--max-queue", type=cli.positive_int, default=1024, help="texts waiting; beyond: 503")
    parser.add_argument("--max-body-bytes", type=cli.positive_int, default=1 << 20, help="beyond: 413")
    parser.add_argument("--max-texts", type=cli.positive_int, default=256, help="texts per request; beyond: 413")
    parser.add_argument("--length-bucket", type=cli.positive_int, help="pad batches to a multiple of this many tokens")
    parser.add_argument("--warmup", action="store_true", help="run every length bucket on each worker first")
    args = cli.parse_args(parser)

    import uvicorn

    from ernie_qat.deploy import Predictor
    from ernie_qat.deploy.server import ServerConfig, create_app

    config = ServerConfig(workers=args.workers, max_batch_size=args.max_batch_size, max_delay_ms=args.max_delay_ms,
                          max_queue=args.max_queue, max_body_bytes=args.max_body_bytes, max_texts=args.max_texts,
                          warmup=args.warmup)
    sock = listening_socket(args.host, args.port)  # before the model loads: a port in use fails at once
    threads = args.threads or max(1, len(os.sched_getaffinity(0)) // args.workers)
    options = {"length_bucket": args.length_bucket} if args.length_bucket else {}
    predictor = Predictor(args.model, threads=threads, batch_size=args.max_batch_size, **options)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    app = create_app(predictor, config)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                print(url, flush=True)

        def handle_exit(self, sig, frame):
            app.state.batcher.draining = True  # /healthz answers 503 from now on
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", http="h11",
                                   loop="asyncio", timeout_graceful_shutdown=None))
    # uvicorn raises the signal it shut down on again once it is done, under the handler it found: SIGTERM has then
    # been handled (exit 0); SIGINT's default handler makes it "interrupted", exit 130.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run(sockets=[sock])
    metrics = app.state.metrics.registry
    answered = sum(sample.value for family in metrics.collect() if family.name == "ernie_qat_requests"
                   for sample in family.samples if sample.name.endswith("_total")
                   and sample.labels["endpoint"] == "/predict")
    unanswered = metrics.get_sample_value("ernie_qat_requests_in_progress", {"endpoint": "/predict"}) or 0
    print(f"stopped: {answered:.0f} /predict requests answered, {unanswered:.0f} unanswered", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
