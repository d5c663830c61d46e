"""A small HTTP proxy between boto3 and the moto server that injects Firehose failures.

Every ``PutRecordBatch`` takes the next action from :attr:`FaultProxy.plan` (or :attr:`FaultProxy.default`,
``"ok"`` unless a test sets it, when the plan is empty):

* ``"ok"``: forwarded as is;
* ``"503"``: answered ``503 ServiceUnavailableException`` (Firehose's throttling answer), nothing forwarded;
* ``("partial", keep)``: only the records at the positions ``keep(position)`` accepts are forwarded; the
  others come back with ``ErrorCode: ServiceUnavailableException`` and ``FailedPutCount > 0``.

Every other request is forwarded untouched. :attr:`FaultProxy.calls` logs what each PutRecordBatch got;
:attr:`FaultProxy.on_put`, when set, is called as each PutRecordBatch arrives (before it is answered).
"""

from __future__ import annotations

import collections
import http.client
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Action = str | tuple[str, Callable[[int], bool]]


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.plan: collections.deque[Action] = collections.deque()
        self.default: Action = "ok"
        self.on_put: Callable[[], object] | None = None
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target", "")
                if target.endswith(".PutRecordBatch"):
                    status, headers, payload = proxy.put_record_batch(dict(self.headers), body)
                else:
                    status, headers, payload = proxy.forward("POST", self.path, dict(self.headers), body)
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list[Any], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
            headers["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def put_record_batch(self, headers: dict[str, str], body: bytes) -> tuple[int, list[Any], bytes]:
        request = json.loads(body)
        records = request["Records"]
        with self.lock:
            action: Action = self.plan.popleft() if self.plan else self.default
            self.calls.append({"records": len(records), "bytes": sum(len(r["Data"]) for r in records),
                               "action": action if isinstance(action, str) else action[0]})
        if self.on_put is not None:
            self.on_put()
        json_headers = [("Content-Type", "application/x-amz-json-1.1")]
        if action == "503":
            error = {"__type": "ServiceUnavailableException", "message": "Slow down."}
            return 503, json_headers, json.dumps(error).encode()
        if action == "ok":
            return self.forward("POST", "/", headers, body)
        _name, keep = action
        kept = [i for i in range(len(records)) if keep(i)]
        answers: list[dict[str, Any]] = [
            {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."} for _ in records
        ]
        if kept:
            forwarded = json.dumps({**request, "Records": [records[i] for i in kept]}).encode()
            status, _h, payload = self.forward("POST", "/", headers, forwarded)
            assert status == 200, payload
            for i, answer in zip(kept, json.loads(payload)["RequestResponses"], strict=False):
                answers[i] = answer
        failed = len(records) - len(kept)
        reply = {"FailedPutCount": failed, "Encrypted": False, "RequestResponses": answers}
        return 200, json_headers, json.dumps(reply).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
