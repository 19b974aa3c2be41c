"""A stub OpenAI-compatible embeddings endpoint on loopback, for testing
engramd's "openai" embedder (embed/openai_embedder.h).

It answers POST /v1/embeddings with stub_vector(text) per input, records
every request (body and headers), and can be told what to do with the next
requests instead: an HTTP status, a raw body, vectors of another dimension,
or a delay before answering.
"""

import hashlib
import http.server
import json
import threading
import time


def stub_vector(text, dimension):
    """A deterministic vector per text: the sum of a fixed +-1 pattern per
    word, plus a constant (never all zeros). Texts sharing words are close."""
    vector = [0.25] * dimension
    for word in text.lower().split():
        digest = hashlib.sha256(word.encode("utf-8")).digest()
        for j in range(dimension):
            vector[j] += 1.0 if digest[j % len(digest)] & 1 else -1.0
    return vector


class StubEmbeddings:
    def __init__(self, dimension):
        self.dimension = dimension
        self.requests = []  # (parsed body, headers) per request
        self.script = []  # what to do with the next requests, oldest first
        self._lock = threading.Lock()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with stub._lock:
                    stub.requests.append((json.loads(body), dict(self.headers)))
                    action = stub.script.pop(0) if stub.script else ("ok",)
                stub._answer(self, action, json.loads(body))

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/embeddings"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _answer(self, handler, action, request):
        kind = action[0]
        if kind == "sleep":
            time.sleep(action[1])
            action = ("ok",)
            kind = "ok"
        if kind in ("ok", "dimension"):
            dimension = action[1] if kind == "dimension" else self.dimension
            data = [{"object": "embedding", "index": i, "embedding": stub_vector(text, dimension)}
                    for i, text in enumerate(request["input"])]
            data.reverse()  # answers may come in any order; "index" places them
            self._send(handler, 200, json.dumps({"object": "list", "data": data}))
        elif kind == "status":
            _, status, body, headers = action
            self._send(handler, status, body, headers)
        elif kind == "raw":
            self._send(handler, 200, action[1])

    @staticmethod
    def _send(handler, status, body, headers=None):
        payload = body.encode("utf-8")
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (the timeout tests)

    def then(self, *actions):
        """Queues actions for the next requests: ("ok",), ("status", code,
        body, headers), ("raw", body), ("dimension", d), ("sleep", seconds)."""
        with self._lock:
            self.script.extend(actions)

    def reset(self):
        with self._lock:
            self.requests.clear()
            self.script.clear()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
