"""`/healthz`, for load balancers: whether each dependency answers; `/metrics`, for Prometheus."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from core import db

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def check_health():
    """Whether the database answers and the image folder takes files, and which providers serve."""
    generator = current_app.extensions["generator"]
    checks = {"database": db.status(current_app.extensions["engine"]),
              "image_dir": current_app.extensions["image_store"].status()}
    providers = {"image": [provider.NAME for provider in generator.image_chain],
                 "text": generator.text_provider.NAME}
    failed = [name for name, status in checks.items() if status != "ok"]
    if failed:
        return jsonify({"error": f"Not ready: {', '.join(failed)}.", "code": "unhealthy", "status": "unavailable",
                        "checks": checks, "providers": providers}), 503
    return jsonify({"status": "ok", "checks": checks, "providers": providers})


@bp.get("/metrics")
def export_metrics():
    """Prometheus metrics: requests, latencies, generations, Clipdrop credits."""
    return current_app.extensions["metrics"].exposition()
