"""Health, readiness and metrics of a stage that has no web app of its own.

``mmbroker stage listen|match|publish`` start this small HTTP server on
``MMBROKER_OPS_PORT`` (0: none) so an orchestrator can probe them and
Prometheus can scrape them, as it does the API: ``GET /health`` (200 while the
process runs), ``GET /ready`` (200, or 503 with the failing checks) and
``GET /metrics``.  :func:`ready_checks` is what both this server and the
app's ``/ready`` answer from.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broker.archive import migrate
from broker.metrics import REGISTRY
from broker.publish import outbox

log = logging.getLogger(__name__)


def ready_checks(archive: Any, running: Any = None) -> dict[str, str]:
    """The archive reachable and at this code's schema; every listener thread alive."""
    checks: dict[str, str] = {}
    try:
        current = migrate.current_revision(archive.engine)
        head = migrate.head_revision()
        checks["archive"] = "ok" if current == head else \
            f"schema at {current}, this code needs {head}"
    except Exception as exc:  # any failure reaching the database is "not ready"
        checks["archive"] = f"{type(exc).__name__}: {exc}"[:300]
    if running is not None:
        dead = [t.name for t in running.threads if not t.is_alive()]
        checks["listeners"] = "ok" if not dead else f"stopped: {', '.join(dead)}"
    return checks


def serve_ops(host: str, port: int, checks: Callable[[], dict[str, str]],
              archive: Any = None) -> ThreadingHTTPServer:
    """Serve /health, /ready and /metrics on ``host:port`` from a daemon thread.

    ``/health`` is liveness only (the process answers); ``/ready`` runs ``checks``;
    with ``archive``, ``/metrics`` includes the outbox depth read from it.
    """
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(200, "application/json", b'{"status": "ok"}')
            elif self.path == "/ready":
                result = checks()
                ok = all(v == "ok" for v in result.values())
                body = json.dumps({"status": "ready" if ok else "not ready", "checks": result})
                self._reply(200 if ok else 503, "application/json", body.encode())
            elif self.path == "/metrics":
                if archive is not None:
                    outbox.export_pending(archive)
                self._reply(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
            else:
                self._reply(404, "application/json", b'{"detail": "not found"}')

        def _reply(self, status: int, media_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("ops %s", format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="ops-http", daemon=True).start()
    return server
