"""A webhook receiver for trying Cronbeat out: prints each delivery and answers 200.

    .venv/bin/python docs/examples/receiver.py 9000

With WEBHOOK_SECRET set to a trigger's signing secret (whsec_...), it also verifies the
Standard Webhooks signature and answers 401 when it does not match.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        secret = os.environ.get("WEBHOOK_SECRET")
        if secret:
            try:
                Webhook(secret).verify(body, dict(self.headers))
            except WebhookVerificationError:
                self.send_response(401)
                self.end_headers()
                print("rejected: bad signature", flush=True)
                return
        delivery = json.loads(body)
        print(f"{self.headers.get('webhook-id')} attempt {delivery['attempt']}: "
              f"{delivery['trigger']['name']} scheduled for {delivery['scheduled_for']}"
              f" payload={json.dumps(delivery['payload'])}", flush=True)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"receiving webhooks on http://127.0.0.1:{port}/", flush=True)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
