"""Server-sent events over Django's StreamingHttpResponse (a sync generator: under gunicorn's threaded
workers, config/gunicorn.py, an open stream holds one thread, not a worker)."""
from __future__ import annotations

import json

from django.http import StreamingHttpResponse


def sse_response(events, *, done: str | None = None) -> StreamingHttpResponse:
    """`data: {json}` blocks, one per event, then `data: <done>` when given (OpenAI's `[DONE]`). The
    events' generator is closed with the response, so a client that leaves stops it."""
    def blocks():
        try:
            for event in events:
                yield f"data: {json.dumps(event, separators=(',', ':'))}\n\n"
        finally:
            if hasattr(events, "close"):
                events.close()
        if done is not None:
            yield f"data: {done}\n\n"

    response = StreamingHttpResponse(blocks(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must pass each event on at once
    return response
