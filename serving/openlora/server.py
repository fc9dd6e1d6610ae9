"""A small long-lived inference process: the engine + batcher behind HTTP on localhost (no Django).

    python -m serving.openlora.server --port 8765 [--cache-adapters 100 --cache-bytes 536870912 --max-batch 32]

POST /infer  {"base_path", "adapter_dir", "text", "task"?, "max_new_tokens"?, "temperature"?, "top_p"?, "stop"?}
             -> the engine's result
GET  /stats  cache and device figures;  GET /healthz  "ok"

The web app reaches it with SERVING_BACKEND=http and SERVING_URL (serving.services); concurrent web
requests are batched together by the Batcher, so different adapters of one base share a forward pass.
Errors: 400 bad JSON or fields, 422 an adapter or base that cannot be served, 500 anything else.
"""
from __future__ import annotations

import argparse
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.openlora.adapters import AdapterError
from serving.openlora.batcher import Batcher
from serving.openlora.engine import InferenceRequest, ServingConfig, ServingEngine

logger = logging.getLogger(__name__)
MAX_BODY = 1 << 20
TIMEOUT_SECONDS = 120


def make_server(engine: ServingEngine, *, host: str = "127.0.0.1", port: int = 0,
                max_wait_ms: float = 5.0) -> ThreadingHTTPServer:
    batcher = Batcher(engine, max_wait_ms=max_wait_ms)

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict | str) -> None:
            data = (json.dumps(body) if isinstance(body, dict) else body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path == "/healthz":
                return self._send(HTTPStatus.OK, "ok")
            if self.path == "/stats":
                return self._send(HTTPStatus.OK, engine.stats())
            return self._send(HTTPStatus.NOT_FOUND, {"detail": "not found"})

        def do_POST(self):  # noqa: N802
            if self.path != "/infer":
                return self._send(HTTPStatus.NOT_FOUND, {"detail": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                return self._send(HTTPStatus.BAD_REQUEST, {"detail": "body must be 1 byte to 1 MiB of JSON"})
            try:
                body = json.loads(self.rfile.read(length))
                request = InferenceRequest(base_path=str(body["base_path"]), adapter_dir=body.get("adapter_dir"),
                                           text=str(body["text"]), task=body.get("task"),
                                           max_new_tokens=body.get("max_new_tokens"),
                                           temperature=body.get("temperature"), top_p=body.get("top_p"),
                                           stop=body.get("stop"))
            except (ValueError, KeyError, TypeError) as exc:
                return self._send(HTTPStatus.BAD_REQUEST, {"detail": f"bad request: {exc}"})
            try:
                return self._send(HTTPStatus.OK, batcher.submit(request).result(timeout=TIMEOUT_SECONDS))
            except AdapterError as exc:
                return self._send(HTTPStatus.UNPROCESSABLE_ENTITY, {"detail": str(exc)})
            except Exception as exc:  # noqa: BLE001 - the caller gets the reason; the server keeps serving
                logger.exception("inference failed")
                return self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"detail": f"{type(exc).__name__}: {exc}"})

        def log_message(self, fmt, *args):  # quiet: one line per request is too much at serving rates
            logger.debug(fmt, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--cache-adapters", type=int, default=100)
    ap.add_argument("--cache-bytes", type=int, default=512 << 20)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--num-beams", type=int, default=4, help="beam width of generation (1: greedy)")
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--device", default="")
    ap.add_argument("--dtype", default="", help="float32 | bfloat16 | float16 | int8 (default: fp16 on CUDA, fp32 on CPU)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = ServingEngine(ServingConfig(cache_adapters=args.cache_adapters, cache_bytes=args.cache_bytes,
                                         max_batch=args.max_batch, max_new_tokens=args.max_new_tokens,
                                         num_beams=args.num_beams, device=args.device, dtype=args.dtype))
    server = make_server(engine, host=args.host, port=args.port, max_wait_ms=args.batch_wait_ms)
    logger.info("serving on http://%s:%s (device %s)", args.host, server.server_address[1], engine.device.type)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
