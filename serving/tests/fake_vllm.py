"""A stand-in for a vLLM server (vLLM needs a GPU and its own torch: it cannot run here), speaking the
subset of its OpenAI-compatible API that serving.vllm uses, and answering with the built-in engine so
the answers are real: GET /v1/models, POST /v1/load_lora_adapter (runtime LoRA loading), POST
/v1/completions (whole and streamed, with usage). Like vLLM, it refuses a model name it has not loaded
(404) and a second load of one name (400)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.openlora import InferenceRequest, ServingConfig, ServingEngine


class FakeVllm:
    def __init__(self, base_path: str, *, base_id: str = "served-base"):
        self.base_path, self.base_id = str(base_path), base_id
        self.engine = ServingEngine(ServingConfig(max_new_tokens=40, device="cpu"))
        self.loras: dict[str, str] = {}
        self.calls: list[tuple[str, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body, content_type="application/json"):
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                if self.path != "/v1/models":
                    return self._send(404, {"error": {"message": "not found"}})
                data = [{"id": fake.base_id, "object": "model", "root": fake.base_path, "parent": None}]
                data += [{"id": n, "object": "model", "root": p, "parent": fake.base_id} for n, p in fake.loras.items()]
                self._send(200, {"object": "list", "data": data})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                fake.calls.append((self.path, body))
                if self.path == "/v1/load_lora_adapter":
                    if body["lora_name"] in fake.loras:
                        return self._send(400, {"error": {"message": f"The lora adapter '{body['lora_name']}' "
                                                                   "has already been loaded."}})
                    fake.loras[body["lora_name"]] = body["lora_path"]
                    return self._send(200, f"Success: LoRA adapter '{body['lora_name']}' added successfully.".encode(),
                                      "text/plain")
                if self.path != "/v1/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                model = body["model"]
                if model != fake.base_id and model not in fake.loras:
                    return self._send(404, {"error": {"message": f"The model `{model}` does not exist."}})
                if "REFUSE" in body["prompt"]:
                    return self._send(400, {"error": {"message": "This prompt is refused by the server."}})
                req = InferenceRequest(base_path=fake.base_path, adapter_dir=fake.loras.get(model), text=body["prompt"],
                                       task="generation", max_new_tokens=body.get("max_tokens"),
                                       temperature=body.get("temperature"), top_p=body.get("top_p"),
                                       stop=body.get("stop"))
                out = fake.engine.infer([req])[0]
                usage = {"prompt_tokens": out["prompt_tokens"], "completion_tokens": out["completion_tokens"],
                         "total_tokens": out["prompt_tokens"] + out["completion_tokens"]}
                if not body.get("stream"):
                    return self._send(200, {"object": "text_completion", "model": model, "usage": usage, "choices": [
                        {"index": 0, "text": out["text"], "finish_reason": out["finish_reason"]}]})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                text, pieces = out["text"], []
                step = max(1, len(text) // 3)
                pieces = [text[i: i + step] for i in range(0, len(text), step)]
                for i, piece in enumerate(pieces):
                    last = i == len(pieces) - 1
                    chunk = {"choices": [{"index": 0, "text": piece, "finish_reason": out["finish_reason"] if last else None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                if not pieces:
                    chunk = {"choices": [{"index": 0, "text": "", "finish_reason": out["finish_reason"]}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                if (body.get("stream_options") or {}).get("include_usage"):
                    self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeVllm:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def restart(self) -> None:
        """What a restarted vLLM knows: its base, no runtime-loaded adapters."""
        self.loras.clear()

    def loads(self) -> int:
        return sum(1 for path, _ in self.calls if path == "/v1/load_lora_adapter")

    def completions(self) -> list[dict]:
        return [body for path, body in self.calls if path == "/v1/completions"]
