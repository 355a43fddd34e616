"""The prediction service: a model answering links over HTTP, and a page for planners.

    python -m flows.serve --model champion --host 127.0.0.1 --port 8000
    python -m flows.serve --model runs/train/my-run --fallback heuristic --port 8080

Then ``POST /v1/predict`` with a link (JSON object), a list of links or a CSV; ``GET /health``,
``GET /v1/model``, ``/docs``; the planner's page at ``/``. Concurrent requests are answered
together (``--batch-window-ms``, ``--max-batch``); with ``--model champion`` a newly
promoted champion is served without a restart. A long-running server, not a flow: the
model is loaded once, before the first request. docs/serve.md has the details.
"""

from __future__ import annotations

import sys

from flows.cli import ArgumentParser, add_model_options, model_from_options, run_cli
from linklm.config import ServeConfig
from linklm.serving import service


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0])
    add_model_options(parser, ServeConfig)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config = model_from_options(ServeConfig, args)
    served = service.load(config)  # a bad model or an empty registry: one line, no server
    app = service.create_app(config, served)
    print(
        f"serving {config.model} ({served.predictor.source}, weights "
        f"{served.weights_sha256[:12]}) on http://{config.host}:{config.port}",
        flush=True,
    )
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
    return 0


if __name__ == "__main__":
    run_cli(main)
