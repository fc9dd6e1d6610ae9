"""Server-sent events over Django's StreamingHttpResponse (a sync generator: under gunicorn's threaded
workers, config/gunicorn.py, an open stream holds one thread, not a worker)."""
from __future__ import annotations

import json

from django.http import StreamingHttpResponse


def sse_response(events, *, done: str | None = None, on_close=None) -> StreamingHttpResponse:
    """`data: {json}` blocks, one per event, then `data: <done>` when given (OpenAI's `[DONE]`). The
    events' generator is closed with the response, so a client that leaves stops it; `on_close()` runs
    after it, also when the client left before the first byte (a generator that never started cannot
    run its own `finally`)."""
    def blocks():
        try:
            for event in events:
                yield f"data: {json.dumps(event, separators=(',', ':'))}\n\n"
        finally:
            if hasattr(events, "close"):
                events.close()
        if done is not None:
            yield f"data: {done}\n\n"

    response = StreamingHttpResponse(_Closing(blocks(), on_close), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must pass each event on at once
    return response


class _Closing:
    """The response's iterable: Django closes it with the response, whether or not it was iterated."""

    def __init__(self, blocks, on_close):
        self._blocks, self._on_close = blocks, on_close

    def __iter__(self):
        return self._blocks

    def close(self) -> None:
        try:
            self._blocks.close()
        finally:
            if self._on_close is not None:
                self._on_close()
