"""A local stand-in for Clipdrop, Stability AI and OpenAI, so generation can be timed without the network.

It speaks the request and response shapes that the provider modules send and read (README, Providers: Clipdrop's
text-to-image, Stability AI's stable-image generate, OpenAI's chat completions), waits `latency_s` before each answer
(every request in its own thread, as a real vendor serves callers in parallel), and answers images with
realistic ~1 MB PNGs: a gradient with pixel noise that PNG compression cannot squeeze away.

Run alone: `python bench/vendor_stub.py --port 8900 --latency 1.0`.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import threading
import time
from collections import Counter
from email.parser import BytesParser
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image, ImageChops

CLIPDROP_PATH = "/text-to-image/v1"
STABILITY_PREFIX = "/v2beta/stable-image/generate/"
STABILITY_ENGINES = ("core", "sd3", "ultra")
OPENAI_PATH = "/v1/chat/completions"
# Output sizes of Stability's ~1 megapixel models per aspect ratio; Clipdrop is always 1024x1024.
ASPECT_SIZES = {
    "1:1": (1024, 1024), "16:9": (1344, 768), "9:16": (768, 1344), "21:9": (1536, 640), "9:21": (640, 1536),
    "3:2": (1216, 832), "2:3": (832, 1216), "5:4": (1088, 896), "4:5": (896, 1088),
}
NOISE_LEVELS = 3  # about 1.6 bits of noise per channel: a 1024x1024 PNG of about 1 MB, like a generated photo
ACHIEVEMENT = {
    "name": "Bench Champion",
    "description": "You timed the whole stack without leaving the machine. Share this badge with friends who "
                   "like fast answers, and challenge them to beat your score before the next celebration.",
    "occasion": "Benchmark Day",
    "product_type": "benchmark",
}


_making = threading.Lock()


def noisy_png(width: int, height: int) -> bytes:
    """A deterministic gradient-plus-noise PNG of the given size, made once per size: a burst of first callers waits
    for one of them to make it (each making its own took a second of CPU apiece, a minute for 100 at once)."""
    with _making:
        return _noisy_png(width, height)


@lru_cache(maxsize=16)
def _noisy_png(width: int, height: int) -> bytes:
    rng = random.Random(width * 100_003 + height)
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(3 * width * height))
    noise = noise.point(lambda v: v % NOISE_LEVELS)
    ramp = Image.linear_gradient("L")
    base = Image.merge("RGB", (ramp.resize((width, height)), ramp.rotate(90).resize((width, height)),
                               Image.new("L", (width, height), 140)))
    out = io.BytesIO()
    ImageChops.add(base, noise).save(out, "PNG")
    return out.getvalue()


def multipart_fields(content_type: str, body: bytes) -> dict[str, str] | None:
    """The text fields of a multipart/form-data body, or None when it is not one."""
    if not content_type.startswith("multipart/form-data"):
        return None
    message = BytesParser().parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        return None
    fields = {}
    for part in message.get_payload():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    return fields


class VendorStub(ThreadingHTTPServer):
    """The stub server: `latency_s` is read on every request, `calls` counts answered calls per vendor, `in_flight`
    the calls it is working on now and `most_in_flight` the most it worked on at once."""

    daemon_threads = True
    request_queue_size = 1024  # a burst of hundreds of callers connects at once, as to a real vendor

    def __init__(self, port: int = 0, latency_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", port), StubHandler)
        self.latency_s = latency_s
        self.calls: Counter[str] = Counter()
        self.received: Counter[str] = Counter()  # calls that have arrived, answered or not yet
        self.in_flight: Counter[str] = Counter()
        self.most_in_flight: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, vendor: str) -> None:
        with self.lock:
            self.calls[vendor] += 1

    def work(self, vendor: str) -> None:
        """Take `latency_s`, as the vendor would, counted among the calls in flight."""
        with self.lock:
            self.in_flight[vendor] += 1
            self.most_in_flight[vendor] = max(self.most_in_flight[vendor], self.in_flight[vendor])
        try:
            time.sleep(self.latency_s)
        finally:
            with self.lock:
                self.in_flight[vendor] -= 1


class StubHandler(BaseHTTPRequestHandler):
    server: VendorStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet: the harness prints its own table
        pass

    def do_GET(self):  # noqa: N802 - the name http.server dispatches to
        """`GET /stub/calls`: the calls received and answered so far, per vendor (for a harness in another process)."""
        if self.path != "/stub/calls":
            return self.answer(404, json.dumps({"error": f"no route {self.path}"}).encode(), "application/json")
        with self.server.lock:
            counts = {"received": dict(self.server.received), "answered": dict(self.server.calls)}
        self.answer(200, json.dumps(counts).encode(), "application/json")

    def do_POST(self):  # noqa: N802 - the name http.server dispatches to
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        vendor = ("clipdrop" if self.path == CLIPDROP_PATH else "stability" if self.path.startswith(STABILITY_PREFIX)
                  else "openai" if self.path == OPENAI_PATH else None)
        if vendor is not None:
            with self.server.lock:
                self.server.received[vendor] += 1
        if self.path == CLIPDROP_PATH:
            self.clipdrop(body)
        elif self.path.startswith(STABILITY_PREFIX):
            self.stability(self.path.removeprefix(STABILITY_PREFIX), body)
        elif self.path == OPENAI_PATH:
            self.openai(body)
        else:
            self.answer(404, json.dumps({"error": f"no route {self.path}"}).encode(), "application/json")

    def answer(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def error_json(self, status: int, payload: dict) -> None:
        self.answer(status, json.dumps(payload).encode(), "application/json")

    def clipdrop(self, body: bytes) -> None:
        if not self.headers.get("x-api-key"):
            return self.error_json(401, {"error": "No api key provided"})
        fields = multipart_fields(self.headers.get("Content-Type", ""), body)
        if not fields or not fields.get("prompt"):
            return self.error_json(400, {"error": "prompt is required (multipart/form-data)"})
        self.server.work("clipdrop")
        self.server.count("clipdrop")
        self.answer(200, noisy_png(1024, 1024), "image/png",
                    {"x-remaining-credits": "99", "x-credits-consumed": "1"})

    def stability(self, engine: str, body: bytes) -> None:
        def fail(status: int, name: str, error: str) -> None:
            self.error_json(status, {"id": "stub", "name": name, "errors": [error]})

        if not self.headers.get("Authorization", "").startswith("Bearer "):
            return fail(401, "unauthorized", "missing Bearer key")
        if engine not in STABILITY_ENGINES:
            return fail(404, "not_found", f"unknown engine {engine}")
        fields = multipart_fields(self.headers.get("Content-Type", ""), body)
        if not fields or not fields.get("prompt"):
            return fail(400, "bad_request", "prompt is required (multipart/form-data)")
        size = ASPECT_SIZES.get(fields.get("aspect_ratio") or "1:1")
        if size is None or fields.get("output_format", "png") != "png":
            return fail(400, "bad_request", "unsupported aspect_ratio or output_format")
        self.server.work("stability")
        self.server.count("stability")
        png, seed = noisy_png(*size), 12345
        if self.headers.get("Accept", "image/*").startswith("application/json"):
            payload = {"image": base64.b64encode(png).decode("ascii"), "finish_reason": "SUCCESS", "seed": seed}
            return self.answer(200, json.dumps(payload).encode(), "application/json")
        self.answer(200, png, "image/png", {"finish-reason": "SUCCESS", "seed": str(seed)})

    def openai(self, body: bytes) -> None:
        def fail(status: int, message: str, kind: str) -> None:
            self.error_json(status, {"error": {"message": message, "type": kind, "code": None, "param": None}})

        if not self.headers.get("Authorization", "").startswith("Bearer "):
            return fail(401, "missing Bearer key", "invalid_request_error")
        try:
            request = json.loads(body)
            model = request["model"]
            if not request["messages"]:
                raise ValueError("no messages")
        except (ValueError, KeyError, TypeError):
            return fail(400, "a JSON body with model and messages is required", "invalid_request_error")
        self.server.work("openai")
        self.server.count("openai")
        completion = {
            "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": json.dumps(ACHIEVEMENT), "refusal": None}}],
            "usage": {"prompt_tokens": len(body) // 4, "completion_tokens": 80, "total_tokens": len(body) // 4 + 80},
        }
        self.answer(200, json.dumps(completion).encode(), "application/json")


def start(latency_s: float = 0.0, port: int = 0) -> VendorStub:
    """Start the stub on 127.0.0.1 in a background thread; stop it with `.shutdown()`."""
    server = VendorStub(port, latency_s)
    threading.Thread(target=server.serve_forever, name="vendor-stub", daemon=True).start()
    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds to wait before each answer")
    args = parser.parse_args()
    stub = VendorStub(args.port, args.latency)
    print(f"vendor stub on {stub.url} (latency {args.latency}s)", flush=True)
    try:
        stub.serve_forever()
    except KeyboardInterrupt:
        pass
