"""Dynamic batching for a long-lived serving process: concurrent callers' requests share forward passes.

    batcher = Batcher(engine, max_wait_ms=5)
    result = batcher.submit(InferenceRequest(...)).result(timeout=30)   # from any thread

One background thread takes whatever is queued (waiting at most `max_wait_ms` after the first request
for more to arrive, up to the engine's max_batch) and runs it as one `engine.infer` call, so requests
for different adapters of the same base that arrive together run in one forward pass. An error in a
batch fails that batch's futures only; the thread keeps serving.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

from serving.openlora.engine import InferenceRequest, ServingEngine


class Batcher:
    def __init__(self, engine: ServingEngine, *, max_wait_ms: float = 5.0):
        self.engine = engine
        self.max_wait = max_wait_ms / 1000
        self._queue: queue.Queue[tuple[InferenceRequest, Future]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="serving-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: InferenceRequest) -> Future:
        future: Future = Future()
        self._queue.put((request, future))
        return future

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.engine.config.max_batch:
                left = deadline - time.monotonic()
                try:
                    batch.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            live = [(r, f) for r, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                results = self.engine.infer([r for r, _ in live])
            except Exception as exc:  # noqa: BLE001 - handed to the callers, who decide
                for _, f in live:
                    f.set_exception(exc)
                continue
            for (_, f), res in zip(live, results, strict=True):
                f.set_result(res)
