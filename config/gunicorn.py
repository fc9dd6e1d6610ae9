"""gunicorn settings for the web service (Dockerfile and docker-compose run `gunicorn -c config/gunicorn.py`).

Threaded workers (gthread): a streamed answer (server-sent events from /v1/chat/completions, the chat
playground) holds its thread until the last token, so with `sync` workers every open stream would hold
a whole worker and the next requests would queue behind it. Each worker process holds its own serving
engine (one copy of each base in memory), so scale threads before processes.
"""
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# gthread's timeout watches the worker process, not one request: a long stream is not cut by it.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
