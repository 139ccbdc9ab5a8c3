"""The HTTP app: predictions for any mix of served tasks, the task list, a rescan, a health check; OpenAPI at /docs.

Every error is JSON, {"error": "..."}, and every answer is documented in the OpenAPI schema. With a token, every endpoint
but /healthz needs `Authorization: Bearer TOKEN`, the schema and its pages (/openapi.json, /docs, /redoc) too. Request
bodies are bounded before they are parsed; CORS is off (no CORS headers are sent).
"""

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from softprompt import __version__
from softprompt.errors import UserError
from softprompt.options import ServeOptions
from softprompt.serve.batching import Scheduler
from softprompt.serve.engine import Engine, UnknownTask

log = logging.getLogger("softprompt.serve")

OPEN_PATHS = ("/healthz",)


Input = str | dict[str, str]
INPUT_FORMS = ("str", "dict[str,str]")  # how validation errors name the two forms of an input


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str
    input: Input


def _one_form(schema: dict) -> None:
    """The schema of either form: a field is absent or holds a value, never null."""
    for field in ("task", "inputs", "items"):
        schema["properties"][field].pop("default", None)
    schema["examples"] = [
        {"task": "sentiment", "inputs": ["A gorgeous, moving film.", "The plot was a mess."]},
        {
            "items": [
                {"task": "sentiment", "input": "A gorgeous film."},
                {"task": "squad", "input": {"question": "Where?", "context": "In Paris."}},
            ]
        },
    ]
    schema["oneOf"] = [
        {"required": ["task", "inputs"], "not": {"required": ["items"]}},
        {"required": ["items"], "not": {"anyOf": [{"required": ["task"]}, {"required": ["inputs"]}]}},
    ]


class PredictRequest(BaseModel):
    """Either `task` and `inputs`, or `items` mixing tasks."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_form)
    # absent is None; a null given is refused, as not a text or list
    task: str = None
    inputs: list[Input] = None
    items: list[Item] = None

    @model_validator(mode="after")
    def one_form(self):
        if not (
            (self.task is not None and self.inputs is not None and self.items is None)
            or (self.items is not None and self.task is None and self.inputs is None)
        ):
            raise ValueError('give either "task" and "inputs", or "items"')
        return self

    def pairs(self) -> list[tuple[str, str | dict]]:
        if self.items is not None:
            return [(item.task, item.input) for item in self.items]
        return [(self.task, value) for value in self.inputs]


class PredictResponse(BaseModel):
    predictions: list[str] = Field(description="One per input, in order: a label value, or a generated text.")


class ErrorBody(BaseModel):
    error: str = Field(description="What was wrong, in one line.")


class TooLarge(Exception):
    pass


def error(status: int, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def create_app(engine: Engine, settings: ServeOptions | None = None) -> FastAPI:
    settings = settings or ServeOptions()

    engine.max_new_tokens, engine.max_seconds = settings.max_new_tokens, settings.timeout_seconds

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.scheduler = Scheduler(engine.run, settings.max_batch_size, settings.max_wait_ms)
        watcher = engine.watch(settings.rescan_seconds) if settings.rescan_seconds > 0 else None
        try:
            yield
        finally:
            if watcher:
                watcher.stop()
            app.state.scheduler.close()

    app = FastAPI(
        title="softprompt",
        version=__version__,
        lifespan=lifespan,
        description="One frozen model serving a soft prompt per task; rows of different tasks run in one batch.",
    )

    @app.get(
        "/healthz",
        responses={503: {"description": "The model has been busy with one pass for longer than a request may wait."}},
    )
    def healthz(request: Request):
        busy = request.app.state.scheduler.busy_seconds()
        if busy > settings.timeout_seconds:
            return JSONResponse({"status": "stuck", "busy_seconds": round(busy, 1)}, status_code=503)
        return {"status": "ok"}

    @app.get("/v1/tasks")
    def tasks() -> dict:
        """The served tasks (name, prompt length, type, template, labels, recorded metrics) and the refused files."""
        return {
            "model": engine.model.name,
            "family": engine.model.family,
            "tasks": engine.tasks(),
            "refused": engine.refused(),
        }

    limits = f"More than {settings.max_inputs} inputs, an input of more than {settings.max_input_chars} characters, or a body of more than {settings.max_body_bytes} bytes."
    answers = {
        400: {"model": ErrorBody, "description": "A body that cannot be read as text (not UTF-8)."},
        404: {"model": ErrorBody, "description": "An unknown task."},
        504: {"model": ErrorBody, "description": "No answer within the server's deadline (--timeout_seconds)."},
        413: {"model": ErrorBody, "description": limits},
        422: {
            "model": ErrorBody,
            "description": "A body that is not JSON of this schema, or an input its task's template cannot take.",
        },
    }

    @app.post(
        "/v1/tasks",
        responses={
            413: answers[413],
            422: {"model": ErrorBody, "description": "A request with a body: the rescan takes none."},
        },
    )
    async def rescan(request: Request) -> dict:
        """Rescan the prompt folder now: load new and changed files, drop deleted ones. Only the folder's own files
        are read: the request names none."""
        if (await request.body()).strip() not in (b"", b"{}"):
            raise UserError("POST /v1/tasks takes no body: it rescans the prompt folder, and only it")
        report = await run_in_threadpool(engine.rescan)
        return {
            "added": report.added,
            "changed": report.changed,
            "dropped": report.dropped,
            "refused": report.refused,
            "tasks": engine.tasks(),
        }

    @app.post("/v1/predict", response_model=PredictResponse, responses=answers)
    async def predict(body: PredictRequest, request: Request) -> dict:
        """Predict for inputs of one task, or for items mixing tasks; all run in shared batches."""
        pairs = body.pairs()
        if len(pairs) > settings.max_inputs:
            raise TooLarge(f"{len(pairs)} inputs, more than the {settings.max_inputs} a request may hold")
        for n, (_, value) in enumerate(pairs, 1):
            size = len(value) if isinstance(value, str) else sum(len(v) for v in value.values())
            if size > settings.max_input_chars:
                raise TooLarge(f"input {n} has {size} characters, more than the {settings.max_input_chars} allowed")
        rows = engine.prepare(pairs)
        try:
            return {
                "predictions": await asyncio.wait_for(
                    asyncio.wrap_future(request.app.state.scheduler.submit(rows)), settings.timeout_seconds
                )
            }
        except TimeoutError:  # its rows leave the queue, or their generation stops at the same deadline
            return error(
                504,
                f"no answer within {settings.timeout_seconds:g} s (--timeout_seconds): the model is busy or the request is too large",
            )

    @app.exception_handler(UnknownTask)
    async def unknown_task(request, e):
        return error(404, str(e))

    @app.exception_handler(UserError)
    async def bad_input(request, e):
        return error(422, str(e))

    @app.exception_handler(TooLarge)
    async def too_large(request, e):
        return error(413, str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e):
        if "json" not in request.headers.get("content-type", ""):
            return error(422, "send the request body as JSON (Content-Type: application/json)")
        first = e.errors()[0]
        if first.get("type") == "json_invalid":
            return error(
                422,
                f"the body is not valid JSON: {first.get('ctx', {}).get('error', 'cannot parse it')} (at character {first['loc'][-1]})",
            )
        loc = [part for part in first.get("loc", ()) if part != "body"]
        message = first.get("msg", "invalid")
        forms = [
            i
            for i in range(1, len(loc))
            if loc[i] in INPUT_FORMS and (isinstance(loc[i - 1], int) or loc[i - 1] == "input")
        ]
        if forms:  # an input neither a text nor an object of texts
            loc, message = loc[: forms[0]], "an input is a text, or an object whose values are texts"
        return error(422, f"{'.'.join(map(str, loc)) or 'body'}: {message}")

    @app.exception_handler(HTTPException)
    async def http_error(request, e):
        return error(e.status_code, str(e.detail), **(e.headers or {}))

    @app.exception_handler(Exception)
    async def internal(request, e):
        log.exception("request failed")
        return error(500, "internal error")

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.token:
        app.add_middleware(BearerAuth, token=settings.token)  # added last: runs first
        document_bearer(app)
    return app


def document_bearer(app: FastAPI) -> None:
    """Name the bearer token, and its 401 answer, in the OpenAPI schema of every operation but OPEN_PATHS."""
    make = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = make()
            schema["components"].setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
            for path, operations in schema["paths"].items():
                if path in OPEN_PATHS:
                    continue
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
                    operation["responses"]["401"] = {
                        "description": "A missing or wrong bearer token.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                    }
        return app.openapi_schema

    app.openapi = openapi


class BearerAuth:
    """Refuse every request but those to OPEN_PATHS without `Authorization: Bearer TOKEN` (constant-time compare)."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()  # compared with the header's bytes as sent

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("latin-1"), self.token):
                response = error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class BodyLimit:
    """Read at most `max_bytes` of a request body before anything parses it; 413 beyond that."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = error(413, f"the request body is larger than {self.max_bytes} bytes")
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
