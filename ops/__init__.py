"""Running the service: `/healthz` and `/metrics` (`health`), serving it with gunicorn or Werkzeug's development
server (`serving`), gunicorn's own errors in JSON (`gunicorn_errors`), and the kernel's sendfile for gevent's sockets
(`gevent_sendfile`)."""

from __future__ import annotations

from flask import Flask

from ops.health import bp


def init_app(app: Flask) -> None:
    """Register `/healthz` and `/metrics`."""
    app.register_blueprint(bp)
