"""The prediction service: one loaded model answering links over HTTP, and a planner's page.

``create_app(ServeConfig(...))`` is a FastAPI app (``flows.serve`` runs it with uvicorn):

- ``POST /v1/predict``: one link (a JSON object) or several (a list, or CSV with a header),
  checked as ``flows.predict`` checks them (the validator's rules, the guardrails, the
  fallback), answered with the same fields. Concurrent requests share model calls
  (``batching.Batcher``). A bad link is a 422 naming the link and the field, a body over
  ``max_body_bytes`` a 413; neither stops the service.
- ``GET /health``, ``GET /v1/model`` (what is served: weights SHA256, card, metrics),
  ``/docs`` (OpenAPI, its JavaScript served by the app itself).
- ``GET /``: the planner's page (``static/``), with its chart's Vega-Lite served here too.

With ``model="champion"`` the registry is read every ``reload_every_s``: a new champion is
loaded beside the old one, which answers meanwhile, and then replaces it; the weights'
SHA256 in every answer's ``X-Model-Weights-SHA256`` header says which one answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import polars as pl
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from linklm.config import ServeConfig
from linklm.data import reader
from linklm.errors import LinkLMError, first_line
from linklm.model import models
from linklm.model.runs import RUN_FILE
from linklm.serving import predict
from linklm.serving.batching import Batcher, Busy

log = logging.getLogger(__name__)

STATIC = resources.files("linklm.serving") / "static"
SHA_HEADER = "X-Model-Weights-SHA256"


class RequestError(LinkLMError):
    """A request the service refuses, with its HTTP status and what to show."""

    def __init__(self, status: int, message: str, problems: list[dict] | None = None):
        super().__init__(message)
        self.status, self.message, self.problems = status, message, problems or []


@dataclass
class Served:
    """The model answering now, and what identifies it."""

    predictor: predict.Predictor
    name: str  # as asked: a folder, a name, or 'champion'
    run_dir: str | None
    weights_sha256: str
    champion_id: str | None = None
    loaded_at: float = field(default_factory=time.time)

    def describe(self) -> dict:
        """What ``/v1/model`` says: the model, its weights, its card and scores."""
        about = {
            "model": self.name,
            "source": self.predictor.source,
            "run_dir": self.run_dir,
            "champion_id": self.champion_id,
            "weights_sha256": self.weights_sha256,
            "prompt_format": self.predictor.loaded.prompt_format.model_dump(),
            "fallback": self.predictor.fallback,
            "top_k": self.predictor.top_k,
            "loaded_at": self.loaded_at,
            "card": None,
            "metrics": None,
        }
        if self.run_dir:
            run = Path(self.run_dir)
            readme = run / "README.md"
            about["card"] = readme.read_text() if readme.is_file() else None
            metrics = run / "eval-test" / "metrics.json"
            if metrics.is_file():
                result = json.loads(metrics.read_text())
                about["metrics"] = {
                    "rows": result.get("rows"),
                    "split": result.get("split"),
                    "standing": result.get("standing"),
                }
        return about


def weights_sha256(folder: str | Path) -> str:
    """One SHA256 for a weights folder: of each file's own SHA256, by name (what changes
    when any weight, the tokenizer or the prompt format changes)."""
    folder = Path(folder)
    if not folder.is_dir():
        return hashlib.sha256(str(folder).encode()).hexdigest()
    hashes = models.file_hashes(folder)
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def load(config: ServeConfig) -> Served:
    """The model the config names, loaded (the registry read once for 'champion')."""
    champion_id = None
    name = config.model
    if name == predict.CHAMPION:
        from linklm.serving import registry

        where = registry.location(config.registry)
        champion_id = (registry.champion(where) or {}).get("id")
        name = str(registry.champion_run_dir(where))
    predictor = predict.Predictor(
        name,
        batch_size=config.max_batch,
        fallback=config.fallback,
        registry_path=config.registry,
        top_k=config.top_k,
        strict=config.strict,
        device=config.device,
    )
    run_dir = name if (Path(name) / RUN_FILE).is_file() else None
    return Served(
        predictor,
        config.model,
        run_dir,
        weights_sha256(predictor.source),
        champion_id,
    )


# --- reading a request --------------------------------------------------------------------


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused (413) once it passes ``limit`` bytes: by its declared length
    before a byte is read, else while it streams in."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {int(declared):,} bytes, over the {limit:,} allowed")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body over the {limit:,} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)


def links_text(body: bytes, content_type: str, max_links: int) -> tuple[pl.DataFrame, bool]:
    """(the links as text cells, whether one object was sent) from a JSON or CSV body."""
    if not body.strip():
        raise RequestError(400, "empty body: send a link as a JSON object, a list, or CSV")
    if "csv" in content_type:
        text = body.decode("utf-8", errors="replace")
        try:
            frame = reader.without_trailing_blank_lines(
                pl.read_csv(text.encode(), infer_schema=False)
            )
        except pl.exceptions.PolarsError as exc:
            raise RequestError(400, f"not a readable CSV ({first_line(exc)})") from None
        records, single = None, False
    else:
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"body is not JSON ({first_line(exc)})") from None
        single = isinstance(value, dict) and "links" not in value
        records = [value] if single else value.get("links") if isinstance(value, dict) else value
        if not isinstance(records, list) or not records:
            raise RequestError(422, "send one link (a JSON object) or a non-empty list of them")
        bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
        if bad:
            raise RequestError(422, f"link {bad[0]} is not a JSON object")
        frame = None
    count = len(records) if records is not None else frame.height
    if count > max_links:
        raise RequestError(413, f"{count:,} links in one request, over the {max_links:,} allowed")
    if records is not None:
        frame = predict.records_to_text(records)
    return frame, single


def numbered(text: pl.DataFrame) -> pl.DataFrame:
    """The request's links with their input columns checked (a missing one: 422 for the
    whole request) and numbered 1..n when they have no scenario_id, before they join other
    requests' links in a batch."""
    try:
        predict.require_input_columns(text.columns, "request")
    except LinkLMError as exc:
        raise RequestError(422, str(exc).removeprefix("request: ")) from None
    if "scenario_id" not in text.columns:
        text = text.with_columns(pl.int_range(1, pl.len() + 1).cast(pl.String).alias("scenario_id"))
    return text


def refuse_problems(problems: pl.DataFrame) -> None:
    """A 422 listing every bad input of a request by link and field, if it has any."""
    if problems.height:
        listed = [
            {
                "link": p["row"],
                "scenario_id": p["scenario_id"],
                "field": p["column"],
                "message": p["message"],
            }
            for p in problems.sort("row").to_dicts()
        ]
        first = listed[0]
        raise RequestError(
            422,
            f"link {first['link']}: {first['field']}: {first['message']}"
            + (f" (and {len(listed) - 1} more problems)" if len(listed) > 1 else ""),
            listed,
        )


def _clean(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def answers_json(answers: pl.DataFrame) -> list[dict]:
    return [{k: _clean(v) for k, v in row.items()} for row in answers.to_dicts()]


# --- the app ------------------------------------------------------------------------------


class Service:
    """The state behind the app: the served model, its batcher, the champion watch."""

    def __init__(self, config: ServeConfig, served: Served | None = None):
        self.config = config
        self.served = served or load(config)
        self.batcher = Batcher(
            self._process, config.batch_window_ms / 1000, config.max_batch, config.max_queue
        )
        self.reload_error: str | None = None
        self.bad_requests = 0

    def _process(self, frames: list[pl.DataFrame]) -> list[tuple]:
        """Check and answer a batch of requests' links in one call each (the checks cost
        about 75 ms a call whatever its size): per request, (its answers, its problems with
        its own link numbers, the weights' SHA256)."""
        served = self.served  # one model for the whole batch, even if a swap lands meanwhile
        combined = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
        rows, problems = predict.parse_links(combined, "request", self.config.strict)
        answered = served.predictor.answer(rows) if rows.height else None
        out, start = [], 0
        for frame in frames:
            end = start + frame.height
            if answered is None:
                answers = predict.empty_answers(served.predictor.top_k)
            else:
                answers = answered.filter(rows["_row"].is_between(start, end - 1))
            own = problems.filter(pl.col("row").is_between(start, end - 1))
            out.append((answers, own.with_columns(pl.col("row") - start), served.weights_sha256))
            start = end
        return out

    async def watch_champion(self) -> None:
        """Forever: look the champion up; load a new one beside the old, then swap."""
        from linklm.serving import registry

        where = registry.location(self.config.registry)
        while True:
            await asyncio.sleep(self.config.reload_every_s)
            try:
                record = await asyncio.to_thread(registry.champion, where)
                if record is None or record.get("id") == self.served.champion_id:
                    continue
                new = await asyncio.to_thread(load, self.config)
            except Exception as exc:  # a bad registry or run: keep serving the old model
                self.reload_error = first_line(exc)
                log.warning("champion not reloaded, still serving the old one: %s", exc)
                continue
            old, self.served, self.reload_error = self.served, new, None
            log.info(
                "champion %s -> %s (weights %s -> %s)",
                old.champion_id,
                new.champion_id,
                old.weights_sha256[:12],
                new.weights_sha256[:12],
            )


def create_app(config: ServeConfig, served: Served | None = None) -> FastAPI:
    """The service's FastAPI app (the model is loaded here, before the first request)."""
    service = Service(config, served)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(service.batcher.run())]
        if config.model == predict.CHAMPION:
            tasks.append(asyncio.create_task(service.watch_champion()))
        yield
        for task in tasks:
            task.cancel()

    app = FastAPI(
        title="linklm prediction service",
        description="Recommended 5 GHz channel and expected throughput for point-to-point links.",
        lifespan=lifespan,
        docs_url=None,  # served below with its JavaScript from this app, not a CDN
    )
    app.state.service = service

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        service.bad_requests += 1
        body = {"detail": exc.message}
        if exc.problems:
            body["problems"] = exc.problems
        return JSONResponse(body, status_code=exc.status)

    @app.post(
        "/v1/predict",
        summary="Answer one link or a list of links",
        openapi_extra={"requestBody": _request_body_doc()},
    )
    async def predict_links(request: Request) -> Response:
        body = await _body(request, config.max_body_bytes)
        text, single = links_text(body, request.headers.get("content-type", ""), config.max_links)
        links = numbered(text)  # a missing input column: this request's 422, not the batch's
        try:
            answered, problems, sha = await service.batcher.submit(links)
        except Busy as exc:
            raise RequestError(503, str(exc)) from None
        except LinkLMError as exc:  # the model cannot answer (e.g. NaN weights): not the input
            raise RequestError(503, f"the model cannot answer: {first_line(exc)}") from None
        refuse_problems(problems)
        out = answers_json(answered)
        return JSONResponse(out[0] if single else out, headers={SHA_HEADER: sha})

    @app.get("/health", summary="Is the service up, and which model answers")
    async def health() -> dict:
        served = service.served
        return {
            "status": "ok",
            "model": served.name,
            "champion_id": served.champion_id,
            "weights_sha256": served.weights_sha256,
            "queued": service.batcher.queue.qsize(),
            "bad_requests": service.bad_requests,
            "reload_error": service.reload_error,
            "batching": service.batcher.stats.summary(),
        }

    @app.get("/v1/model", summary="The served model: weights SHA256, card, metrics")
    async def model_info() -> dict:
        return service.served.describe()

    @app.get("/v1/example", summary="A valid link to start from (the page's first form)")
    async def example() -> dict:
        return EXAMPLE_LINK

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "planner.html").read_text())

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)  # no icon, and no 404 in the browser's console

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        return _static(name)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        from fastapi.openapi.docs import get_swagger_ui_html

        if _swagger_files() is None:
            return HTMLResponse(_plain_docs(app.openapi()))
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=app.title,
            swagger_js_url="/static/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui.css",
            swagger_favicon_url="/static/favicon-32x32.png",
        )

    return app


# --- files the page needs, all served by the app ------------------------------------------

_BUNDLE: dict[str, bytes] = {}
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".png": "image/png"}


def _static(name: str) -> Response:
    """planner.js/.css from the package, vega.js (Vega, Vega-Lite and vega-embed: the
    reports' bundle, kept on disk, no CDN), Swagger UI's files when the package that ships
    them is there."""
    suffix = Path(name).suffix
    if name == "vega.js":
        if "vega.js" not in _BUNDLE:
            from linklm.evaluation import report

            _BUNDLE["vega.js"] = report.javascript_bundle().encode()
        return Response(_BUNDLE["vega.js"], media_type=TYPES[".js"])
    swagger = _swagger_files()
    if swagger is not None and (swagger / name).is_file() and name.startswith(("swagger", "fav")):
        return Response((swagger / name).read_bytes(), media_type=TYPES.get(suffix))
    path = STATIC / name
    if "/" in name or not path.is_file():
        return JSONResponse({"detail": f"no file {name!r}"}, status_code=404)
    return Response(path.read_bytes(), media_type=TYPES.get(suffix, "application/octet-stream"))


def _swagger_files() -> Path | None:
    """Swagger UI's files from the swagger-ui-bundle package, if it is installed."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


def _plain_docs(openapi: dict) -> str:
    """The API as a plain page, where Swagger UI's files are not installed."""
    rows = "".join(
        f"<li><code>{method.upper()} {path}</code>: {op.get('summary', '')}</li>"
        for path, ops in openapi["paths"].items()
        for method, op in ops.items()
    )
    return (
        f"<!doctype html><title>{openapi['info']['title']}</title><h1>{openapi['info']['title']}"
        f"</h1><ul>{rows}</ul><p>The OpenAPI document: <a href='/openapi.json'>/openapi.json</a>"
    )


def _request_body_doc() -> dict:
    """The request body in the OpenAPI document: a link, a list of links, or CSV."""
    link = {
        "type": "object",
        "description": "A link's input columns of DATA_SPEC.md (labels and rssi/snr optional, "
        "ignored).",
        "example": EXAMPLE_LINK,
    }
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": [link, {"type": "array", "items": link}]}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }


# a generated link (seed 1, scenario 11): valid, so the page's first submit answers
EXAMPLE_LINK = {
    "scenario_id": 11,
    "device_a_coordinates": [35.366967, 36.781542, 56.6],
    "device_b_coordinates": [35.293757, 36.814205, 638.4],
    "link_distance_m": 8663.1,
    "noise_dbm": -88.4,
    "noise_floor_dbm": -95.3,
    "tx_power_dbm": 18.2,
    "channel_bandwidth_mhz": 80,
    "channel_utilization_pct": 37.8,
    "available_channels_mhz": [4900, 5010, 5025, 5160, 5475, 5485, 5610, 5635, 5830, 5935],
    "spectral_scan_dbm": {
        "4900": -89.2,
        "5010": -89.4,
        "5025": -89.0,
        "5160": -87.2,
        "5475": -92.0,
        "5485": -90.1,
        "5610": -90.1,
        "5635": -91.4,
        "5830": -93.3,
        "5935": -89.8,
    },
    "fresnel_clear_pct": 96.4,
    "weather_temp_c": 21.4,
    "weather_humidity_pct": 59.9,
    "weather_condition": "Storm",
    "image_obstruction_detected": False,
    "image_obstruction_type": "None",
    "environment_type": "Urban",
    "area_density": "Low",
}
