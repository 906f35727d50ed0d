"""A demo page for a saved model: upload an image, see its top labels and the Grad-CAM overlay.

``python -m helpers demo MODEL_FOLDER`` serves one small page on http://127.0.0.1:PORT/ (this
machine only): choose an image, and the page shows the model's top-k labels with their
probabilities and, for a Keras model, where it looked (Grad-CAM, :mod:`helpers.gradcam`).
MODEL_FOLDER is a folder written by ``retrain`` (or ``saved_models.save_model``), or an export
folder (:mod:`helpers.export`; labels only: an exported graph has no layers to explain).

Built on the standard library's :mod:`http.server`: nothing to install, no page asset
fetched from the internet (a classroom without Wi-Fi still runs it), and the model stays
in this one process. A file that is not an image, an empty one or one that is too big
is answered with a message that says so; the server keeps running.
"""

from __future__ import annotations

import argparse
import base64
import http.server
import io
import json
import sys
import threading
from typing import Any, Sequence

import numpy as np

from helpers import backbones, device, gradcam, saved_models
from helpers.settings import Settings, load_settings

__all__ = ["BadUpload", "DemoModel", "MAX_UPLOAD_BYTES", "decode_upload", "main", "make_server"]

HOST = "127.0.0.1"  # loopback only: the demo is for this machine (a projector, a student's laptop)
DEFAULT_PORT = 8765
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
ALLOWED_HOSTS = {"127.0.0.1", "localhost"}


class BadUpload(ValueError):
    """An uploaded file the demo cannot label; the message says why and what to upload instead."""


def decode_upload(data: bytes) -> np.ndarray:
    """An uploaded file as an 8-bit RGB array, or :class:`BadUpload` saying why not.

    >>> decode_upload(b"")
    Traceback (most recent call last):
    ...
    helpers.demo.BadUpload: the file is empty (0 bytes): choose a JPEG or PNG image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise BadUpload("the file is empty (0 bytes): choose a JPEG or PNG image.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadUpload(f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MB: choose a smaller image.")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            picture = ImageOps.exif_transpose(image).convert("RGB")
    except UnidentifiedImageError:
        raise BadUpload("this file is not an image the demo can read: choose a JPEG, PNG, GIF, BMP or WebP file.") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise BadUpload(f"this image is damaged or truncated ({error}): choose another file.") from None
    return np.asarray(picture)


def _png_data_uri(array: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class DemoModel:
    """A saved model ready to label uploads: top-k labels and, for a Keras model, a Grad-CAM overlay.

    Args:
        location: A model folder (``retrain``, ``saved_models.save_model``) or an export folder.
        settings: Course settings; the model's backbone, alpha and input size replace the settings'.
        k: Labels shown per image.
    """

    def __init__(self, location: str, settings: Settings | None = None, *, k: int = 5) -> None:
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive whole number of labels, not {k!r}.")
        self.model, info = saved_models.load_model(location)
        self.settings = saved_models.model_settings(info, settings or load_settings())
        self.class_names = [str(c) for c in info["class_names"]]
        self.size = int(info["image_size"])
        self.k = min(int(k), len(self.class_names))
        self.backbone = backbones.get_backbone(settings=self.settings)
        self._cam_model, self._cam_note = _explainable(self.model, self.backbone)
        self.explains = self._cam_model is not None
        self._lock = threading.Lock()  # one prediction at a time: TensorFlow's memory, and Grad-CAM's tape

    def label(self, data: bytes) -> dict[str, Any]:
        """Label one uploaded file: ``labels`` (label, probability), ``image`` and ``overlay`` (PNG data URIs), ``note``.

        Raises:
            BadUpload: The file is not a readable image.
        """
        from PIL import Image

        picture = decode_upload(data)
        pixels = np.asarray(Image.fromarray(picture).resize((self.size, self.size), Image.BILINEAR))
        overlay, probabilities = None, None
        with self._lock:
            if self._cam_model is not None:
                cam = gradcam.compute(self._cam_model, [pixels], self.settings)
                overlay = _png_data_uri(gradcam.overlay(pixels, cam.heatmaps[0]))
                if self._cam_model is self.model:
                    probabilities = cam.probabilities[0]
            if probabilities is None:
                batch = self.backbone.preprocess(pixels[None].astype("float32"))
                probabilities = np.asarray(device.predict_batch(self.model, batch))[0]
        order = np.argsort(probabilities)[::-1][: self.k]
        return {
            "labels": [{"label": self.class_names[i], "probability": float(probabilities[i])} for i in order],
            "image": _png_data_uri(pixels),
            "overlay": overlay,
            "note": self._cam_note,
        }


def _explainable(model: Any, backbone: backbones.Backbone) -> tuple[Any, str]:
    """The model Grad-CAM can explain, and a note: the model itself, or the one inside a flip-averaging wrapper."""
    if not hasattr(model, "layers"):
        return None, "no Grad-CAM: an exported model has no layers to explain (serve the retrain folder for it)"
    nested = [
        layer for layer in model.layers
        if hasattr(layer, "layers") and tuple(layer.output.shape[1:]) == tuple(model.output.shape[1:])
    ]
    for candidate in [model, *nested]:
        try:
            gradcam.build_gradcam_model(candidate, backbone.cam_layer)
        except ValueError:
            continue
        if candidate is model:
            return model, ""
        return candidate, "Grad-CAM of the image as it is (the model also averages its answer with the flipped image)"
    return None, f"no Grad-CAM: the model has no layer {backbone.cam_layer!r} of its backbone"


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 860px; margin: 2em auto; padding: 0 1em; }}
#pictures img {{ width: 280px; height: 280px; image-rendering: auto; margin-right: 1em; border: 1px solid #ccc; }}
#error {{ color: #b00020; font-weight: bold; }}
li span {{ display: inline-block; height: 0.8em; background: #3b7dd8; margin-left: 0.5em; }}
</style></head>
<body>
<h1>{title}</h1>
<p>Classes: {classes}. Choose an image; the model answers with its top {k} labels{cam}.</p>
<form id="form"><input type="file" id="file" accept="image/*"> <button id="submit" type="submit">Label it</button></form>
<p id="status"></p><p id="error" role="alert"></p>
<ol id="labels"></ol>
<div id="pictures"></div>
<script src="/demo.js"></script>
</body></html>
"""

SCRIPT = """
const form = document.getElementById("form"), status = document.getElementById("status");
const error = document.getElementById("error"), list = document.getElementById("labels");
const pictures = document.getElementById("pictures");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = document.getElementById("file").files[0];
  error.textContent = ""; list.replaceChildren(); pictures.replaceChildren();
  if (!file) { error.textContent = "Choose an image file first."; return; }
  status.textContent = "Labelling " + file.name + "...";
  try {
    const response = await fetch("/predict", {method: "POST", body: file,
                                              headers: {"Content-Type": "application/octet-stream"}});
    const answer = await response.json();
    status.textContent = "";
    if (!response.ok) { error.textContent = answer.error; return; }
    for (const row of answer.labels) {
      const item = document.createElement("li"), bar = document.createElement("span");
      item.textContent = row.label + ": " + (100 * row.probability).toFixed(1) + " %";
      bar.style.width = (200 * row.probability) + "px"; item.appendChild(bar); list.appendChild(item);
    }
    for (const [key, text] of [["image", "the image as the model sees it"], ["overlay", "where it looked (Grad-CAM)"]]) {
      if (!answer[key]) continue;
      const img = document.createElement("img"); img.src = answer[key]; img.alt = text; img.id = key;
      img.title = text; pictures.appendChild(img);
    }
    if (answer.note) status.textContent = answer.note;
  } catch (failure) {
    status.textContent = ""; error.textContent = "The demo server did not answer: is it still running? (" + failure + ")";
  }
});
"""


def _handler(demo: DemoModel, quiet: bool) -> type[http.server.BaseHTTPRequestHandler]:
    page = PAGE.format(
        title="Image classifier demo", classes=", ".join(demo.class_names), k=demo.k,
        cam=" and where it looked (Grad-CAM)" if demo.explains else "",
    ).encode("utf-8")

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "tl-workshop-demo"

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            # Nothing but this server: no fonts, scripts or images from elsewhere.
            self.send_header(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'self'",
            )
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: dict[str, Any]) -> None:
            self._send(status, json.dumps(value).encode("utf-8"), "application/json")

        def _local(self) -> bool:
            # A page elsewhere cannot reach this server through a name that resolves to 127.0.0.1 (DNS rebinding).
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            if host not in ALLOWED_HOSTS:
                self._json(403, {"error": f"open the demo at http://{HOST}:{self.server.server_address[1]}/"})
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if not self._local():
                return
            if self.path in ("/", "/index.html"):
                self._send(200, page, "text/html; charset=utf-8")
            elif self.path == "/demo.js":
                self._send(200, SCRIPT.encode("utf-8"), "text/javascript; charset=utf-8")
            else:
                self._json(404, {"error": f"no page {self.path}; the demo is at /"})

        def do_POST(self) -> None:  # noqa: N802
            if not self._local():
                return
            if self.path != "/predict":
                self._json(404, {"error": f"no endpoint {self.path}; upload to /predict"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_UPLOAD_BYTES:
                self.close_connection = True  # the body is not read
                self._json(413, {"error": f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MB: choose a smaller "
                                 "image."})
                return
            data = self.rfile.read(length)
            try:
                self._json(200, demo.label(data))
            except BadUpload as error:
                self._json(400, {"error": str(error)})
            except Exception as error:  # the server keeps serving; the page shows what went wrong
                self._json(500, {"error": f"the model failed on this image ({type(error).__name__}: {error})."})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            if not quiet:
                sys.stderr.write(f"demo: {self.address_string()} {format % args}\n")

    return Handler


def make_server(demo: DemoModel, port: int = DEFAULT_PORT, *, quiet: bool = True) -> http.server.ThreadingHTTPServer:
    """The demo's HTTP server on 127.0.0.1:``port`` (0 = any free port); call ``serve_forever()`` to run it.

    Raises:
        OSError: The port is taken (the message says so).
    """
    if int(port) != port or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number from 0 to 65535, not {port!r}.")
    try:
        server = http.server.ThreadingHTTPServer((HOST, int(port)), _handler(demo, quiet))
    except OSError as error:
        raise OSError(f"cannot serve on {HOST}:{port} ({error.strerror}); choose another port with --port.") from None
    server.daemon_threads = True
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers demo MODEL``: serve the demo page until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers demo",
        description="Serve a small web page on this machine (127.0.0.1) to try a saved model: upload an image, see "
        "the top labels and the Grad-CAM overlay.",
    )
    parser.add_argument("model", help="a model folder written by `retrain` (or an export folder: labels only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    parser.add_argument("-k", "--top", type=int, default=5, help="labels shown per image (default 5)")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        device.setup(settings)
        demo = DemoModel(args.model, settings, k=args.top)
        server = make_server(demo, args.port, quiet=args.quiet)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"demo of {args.model}: open http://{HOST}:{server.server_address[1]}/  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
