"""The HTTP side of `slmops serve`: KServe/Triton v2 routes, the generate extension, limits,
metrics and a draining shutdown, on aiohttp.

The model runs only in worker threads (one per admitted request), so the event loop keeps
answering health checks, metrics and refusals while the model is busy. The HTTP listener
comes up before the model is loaded: live answers at once, ready only once the model is
loaded and warmed up, which is what a startup or readiness probe needs.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import signal
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from aiohttp import web

from slmops.runtime.admission import Admission, OverloadedError
from slmops.runtime.generate_request import GenerationRequest, parse_generation_request
from slmops.runtime.generation import (
    FINISH_CANCELLED,
    GenerationResult,
    TextGenerationModel,
    is_generation_model,
)
from slmops.runtime.inference import OnnxInferenceModel, TensorSpec
from slmops.runtime.metrics import (
    CONTENT_TYPE,
    FAILURE_BACKEND,
    FAILURE_CANCELED,
    FAILURE_OTHER,
    FAILURE_REJECTED,
    ServedIdentity,
    ServerMetrics,
)
from slmops.runtime.model_store import ResolvedModel, describe, resolve_model
from slmops.runtime.protocol import (
    InferRequest,
    ProtocolError,
    decode_infer_request,
    encode_infer_response,
    parse_json_object,
)
from slmops.runtime.settings import ServeSettings
from slmops.runtime.slowdown import Slowdown

log = logging.getLogger("slmops.serve")

SERVER_NAME = "slmops"
MODEL_VERSION = "1"
EXTENSIONS = ["binary_tensor_data", "generate"]
_HEADER_LENGTH = "Inference-Header-Content-Length"


class ServedModel(Protocol):
    @property
    def platform(self) -> str: ...
    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...
    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...
    @property
    def providers(self) -> list[str]: ...

    def warm_up(self) -> None: ...


class BodyTooLargeError(Exception):
    """The body is over --max-body-bytes; answered with 400."""


@dataclass
class _Outcome:
    """How one request ended, for metrics."""

    arrived: float = 0.0
    code: int = 200
    error_reason: str | None = None
    triton_failure: str | None = None
    queue_s: float = 0.0
    compute_s: float = 0.0


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def load_model(resolved: ResolvedModel, settings: ServeSettings) -> ServedModel:
    slowdown = Slowdown(settings.sim_slowdown)
    if is_generation_model(resolved.path):
        return TextGenerationModel(
            resolved.path, settings.threads, settings.execution_provider, slowdown
        )
    return OnnxInferenceModel(
        resolved.path, settings.threads, settings.execution_provider, slowdown
    )


class ModelServer:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.identity = ServedIdentity(
            model=settings.model_name,
            version=MODEL_VERSION,
            revision=settings.revision,
            variant=settings.variant,
        )
        self.metrics = ServerMetrics(self.identity)
        self.admission = Admission(settings.max_concurrency, settings.max_queue)
        self.model: ServedModel | None = None
        self.load_error: str | None = None
        self.draining = False
        self._active_requests = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_concurrency, thread_name_prefix="model"
        )
        self.app = self._build_app()

    # --- lifecycle ----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        # aiohttp's own size limit answers 413; ours answers 400 as the protocol asks, so
        # the app-level limit is off and the body is read by _read_body.
        app = web.Application(client_max_size=0)
        m = "/v2/models/{model}"
        v = "/v2/models/{model}/versions/{version}"
        app.router.add_get("/v2/health/live", self.live)
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_get("/v2", self.server_metadata)
        app.router.add_get("/metrics", self.metrics_endpoint)
        for prefix in (m, v):
            app.router.add_get(prefix, self.model_metadata)
            app.router.add_get(prefix + "/ready", self.model_ready)
            app.router.add_post(prefix + "/infer", self.infer)
            app.router.add_post(prefix + "/generate", self.generate)
            app.router.add_post(prefix + "/generate_stream", self.generate_stream)
        return app

    def _begin(self) -> float:
        """A model request starts: drain waits for it. Returns its arrival time."""
        self._active_requests += 1
        self._idle.clear()
        return time.perf_counter()

    def load(self) -> None:
        """Resolve (maybe download), load and warm up the model; runs in a thread."""
        started = time.perf_counter()
        resolved = resolve_model(
            self.settings.model, self.settings.cache_dir, plain_http=self.settings.plain_http
        )
        model = load_model(resolved, self.settings)
        model.warm_up()
        base = self.metrics.base_labels
        self.metrics.model_download.labels(*base).set(resolved.download_seconds)
        self.metrics.model_download_bytes.labels(*base).set(resolved.downloaded_bytes)
        self.metrics.model_info.labels(
            *base, model.platform, self.settings.execution_provider, str(self.settings.threads)
        ).set(1)
        self.model = model
        elapsed = time.perf_counter() - started
        self.metrics.model_load.labels(*base).set(elapsed)
        log.info(
            "ready: model %s (%s) from %s; providers %s; threads %s; loaded in %.2f s",
            self.identity.model,
            model.platform,
            describe(resolved),
            ",".join(model.providers),
            self.settings.threads or "onnxruntime default",
            elapsed,
        )

    async def drain(self) -> None:
        """Stop taking new work and wait (bounded) for what is in flight to finish."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self.settings.drain_timeout_s)
        except TimeoutError:
            log.warning(
                "drain timeout after %.0f s with %d request(s) still running",
                self.settings.drain_timeout_s,
                self._active_requests,
            )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- health and metadata ------------------------------------------------------------

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        ok = self.model is not None and not self.draining
        return web.Response(status=200 if ok else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        from slmops import __version__

        return web.json_response(
            {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}
        )

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        base = self.metrics.base_labels
        self.metrics.inflight.labels(*base).set(self.admission.running)
        self.metrics.queued.labels(*base).set(self.admission.waiting)
        return web.Response(
            body=self.metrics.render(pending_requests=self.admission.waiting),
            headers={"Content-Type": CONTENT_TYPE},
        )

    def _check_model(self, request: web.Request) -> ServedModel | web.Response:
        name = request.match_info["model"]
        version = request.match_info.get("version", MODEL_VERSION)
        if name != self.identity.model:
            return _error(404, f"Request for unknown model: '{name}' is not found")
        if version != MODEL_VERSION:
            return _error(
                404, f"Request for unknown model: '{name}' version {version} is not found"
            )
        if self.model is None:
            return _error(503, f"model '{name}' is not ready (loading)")
        return self.model

    async def model_metadata(self, request: web.Request) -> web.Response:
        model = self._check_model(request)
        if isinstance(model, web.Response):
            return model
        return web.json_response(
            {
                "name": self.identity.model,
                "versions": [MODEL_VERSION],
                "platform": model.platform,
                "inputs": [spec.as_metadata() for spec in model.inputs],
                "outputs": [spec.as_metadata() for spec in model.outputs],
            }
        )

    async def model_ready(self, request: web.Request) -> web.Response:
        model = self._check_model(request)
        if isinstance(model, web.Response):
            return model
        return web.Response(status=503 if self.draining else 200)

    # --- request bodies -----------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLargeError(
                f"request body of {request.content_length} bytes exceeds the limit of {limit}"
            )
        chunks = []
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _discard_body(self, request: web.Request) -> bool:
        """Read and drop what is left of the body so the keep-alive connection stays in sync
        (tritonclient reuses it); False when it is too large to be worth reading."""
        budget = 64 * self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > budget:
            return False
        dropped = 0
        while chunk := await request.content.readany():
            dropped += len(chunk)
            if dropped > budget:
                return False
        return True

    async def _refuse_body(self, request: web.Request, message: str) -> web.Response:
        response = _error(400, message)
        if not await self._discard_body(request):
            response.force_close()
        return response

    # --- infer --------------------------------------------------------------------------

    async def infer(self, request: web.Request) -> web.StreamResponse:
        arrived = self._begin()
        outcome = _Outcome(arrived=arrived)
        try:
            response = await self._infer(request, outcome)
        except asyncio.CancelledError:
            outcome.code, outcome.error_reason, outcome.triton_failure = (
                499,
                "cancelled",
                FAILURE_CANCELED,
            )
            raise
        finally:
            self._record("infer", arrived, outcome)
        return response

    async def _infer(self, request: web.Request, outcome: _Outcome) -> web.StreamResponse:
        try:
            body = await self._read_body(request)
        except BodyTooLargeError as error:
            outcome.code, outcome.error_reason, outcome.triton_failure = (
                400,
                "bad_request",
                FAILURE_OTHER,
            )
            return await self._refuse_body(request, str(error))
        model = self._check_model(request)
        if isinstance(model, web.Response):
            outcome.code, outcome.error_reason = model.status, "not_found"
            outcome.triton_failure = FAILURE_OTHER
            return model
        if self.draining:
            return self._overloaded(outcome, "server is shutting down", draining=True)
        try:
            infer_request = decode_infer_request(body, _json_header_length(request))
            if isinstance(model, TextGenerationModel):
                return await self._infer_text(request, model, infer_request, outcome)
            assert isinstance(model, OnnxInferenceModel)
            model.validate(infer_request)
        except (ProtocolError, ValueError) as error:
            outcome.code, outcome.error_reason, outcome.triton_failure = (
                400,
                "bad_request",
                FAILURE_OTHER,
            )
            return _error(400, str(error))
        try:
            async with self.admission.slot() as queue_s:
                outcome.queue_s = queue_s
                started = time.perf_counter()
                loop = asyncio.get_running_loop()
                try:
                    if model.runs_inline(infer_request.inputs):
                        outputs = model.run(infer_request.inputs)
                    else:
                        outputs = await loop.run_in_executor(
                            self._executor, model.run, infer_request.inputs
                        )
                except Exception as error:  # the model itself failed on valid input
                    log.exception("inference failed")
                    outcome.code, outcome.error_reason = 500, "model_error"
                    outcome.triton_failure = FAILURE_BACKEND
                    return _error(500, f"inference failed: {error}")
                outcome.compute_s = time.perf_counter() - started
        except OverloadedError as error:
            return self._overloaded(outcome, str(error))
        encoded = encode_infer_response(self.identity.model, MODEL_VERSION, infer_request, outputs)
        return self._binary_aware_response(request, encoded.body, encoded.json_header_length)

    async def _infer_text(
        self,
        request: web.Request,
        model: TextGenerationModel,
        infer_request: InferRequest,
        outcome: _Outcome,
    ) -> web.StreamResponse:
        """v2 infer on a generation model: text_input BYTES in, text_output BYTES out, the
        request parameters carrying the generate knobs."""
        prompt = infer_request.inputs.get("text_input")
        if prompt is None or prompt.size != 1:
            raise ProtocolError("a generation model takes one BYTES element 'text_input'")
        element = prompt.reshape(-1)[0]
        text = element.decode(errors="replace") if isinstance(element, bytes) else str(element)
        generation_request = parse_generation_request(
            {**infer_request.parameters, "text_input": text}
        )
        try:
            result = await self._run_generation(request, model, generation_request, outcome)
        except OverloadedError as error:
            return self._overloaded(outcome, str(error))
        if isinstance(result, web.Response):
            return result
        outputs = {"text_output": np.array([result.text.encode()], dtype=np.object_)}
        encoded = encode_infer_response(self.identity.model, MODEL_VERSION, infer_request, outputs)
        return self._binary_aware_response(request, encoded.body, encoded.json_header_length)

    def _binary_aware_response(
        self, request: web.Request, body: bytes, json_header_length: int | None
    ) -> web.Response:
        headers = {}
        if json_header_length is not None:
            headers[_HEADER_LENGTH] = str(json_header_length)
            content_type = "application/octet-stream"
        else:
            content_type = "application/json"
        accepted = request.headers.get("Accept-Encoding", "")
        if "gzip" in accepted:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        elif "deflate" in accepted:
            body = zlib.compress(body, 1)
            headers["Content-Encoding"] = "deflate"
        headers["Content-Type"] = content_type
        return web.Response(body=body, headers=headers)

    def _overloaded(self, outcome: _Outcome, message: str, draining: bool = False) -> web.Response:
        outcome.code = 503
        outcome.error_reason = "draining" if draining else "overloaded"
        outcome.triton_failure = FAILURE_REJECTED
        response = _error(503, message)
        response.headers["Retry-After"] = "1"
        return response

    def _record(self, endpoint: str, arrived: float, outcome: _Outcome) -> None:
        """A model request ends (any way): metrics, and maybe the end of a drain."""
        self._active_requests -= 1
        if self._active_requests == 0:
            self._idle.set()
        elapsed = time.perf_counter() - arrived
        self.metrics.observe_request(endpoint, outcome.code, elapsed)
        if outcome.error_reason is None:
            self.metrics.triton.success(elapsed, outcome.queue_s, outcome.compute_s)
        else:
            self.metrics.count_error(endpoint, outcome.error_reason)
            self.metrics.triton.failure(outcome.triton_failure or FAILURE_OTHER, elapsed)

    # --- generate -----------------------------------------------------------------------

    async def _parse_generate(
        self, request: web.Request, outcome: _Outcome
    ) -> tuple[TextGenerationModel, GenerationRequest] | web.Response:
        try:
            body = await self._read_body(request)
        except BodyTooLargeError as error:
            outcome.code, outcome.error_reason = 400, "bad_request"
            outcome.triton_failure = FAILURE_OTHER
            return await self._refuse_body(request, str(error))
        model = self._check_model(request)
        if isinstance(model, web.Response):
            outcome.code, outcome.error_reason = model.status, "not_found"
            outcome.triton_failure = FAILURE_OTHER
            return model
        if not isinstance(model, TextGenerationModel):
            outcome.code, outcome.error_reason = 400, "bad_request"
            outcome.triton_failure = FAILURE_OTHER
            return _error(400, f"model '{self.identity.model}' is not a text generation model")
        if self.draining:
            return self._overloaded(outcome, "server is shutting down", draining=True)
        try:
            return model, parse_generation_request(parse_json_object(body))
        except ProtocolError as error:
            outcome.code, outcome.error_reason = 400, "bad_request"
            outcome.triton_failure = FAILURE_OTHER
            return _error(400, str(error))

    async def _run_generation(
        self,
        request: web.Request,
        model: TextGenerationModel,
        generation_request: GenerationRequest,
        outcome: _Outcome,
        *,
        on_text: Callable[[str], None] | None = None,
        before_start: Callable[[], Awaitable[None]] | None = None,
        cancelled: threading.Event | None = None,
    ) -> GenerationResult | web.Response:
        """Run one generation in a worker thread under an admission slot. If the handler is
        cancelled (the client went away), the generator is told to stop after its current
        token, and the slot is held until it has, so a burst of abandoned requests cannot
        pile up threads behind the limit."""
        arrived = outcome.arrived
        async with self.admission.slot() as queue_s:
            outcome.queue_s = queue_s
            loop = asyncio.get_running_loop()
            try:
                prompt_ids = await loop.run_in_executor(
                    self._executor, model.encode_prompt, generation_request
                )
            except ProtocolError as error:
                outcome.code, outcome.error_reason = 400, "bad_request"
                outcome.triton_failure = FAILURE_OTHER
                return _error(400, str(error))
            if before_start is not None:
                await before_start()
            cancelled = cancelled or threading.Event()
            started = time.perf_counter()
            future = loop.run_in_executor(
                self._executor,
                model.generate,
                generation_request,
                cancelled,
                on_text,
                prompt_ids,
            )
            try:
                result = await asyncio.shield(future)
            except asyncio.CancelledError:
                cancelled.set()
                await asyncio.wait([future])
                if not future.cancelled() and future.exception() is None:
                    # The tokens made before the client left were still computed.
                    finished = future.result()
                    self.metrics.observe_tokens(
                        arrived, finished.token_times, finished.prompt_tokens
                    )
                outcome.code, outcome.error_reason = 499, "cancelled"
                outcome.triton_failure = FAILURE_CANCELED
                raise
            except ProtocolError as error:
                outcome.code, outcome.error_reason = 400, "bad_request"
                outcome.triton_failure = FAILURE_OTHER
                return _error(400, str(error))
            except Exception as error:
                log.exception("generation failed")
                outcome.code, outcome.error_reason = 500, "model_error"
                outcome.triton_failure = FAILURE_BACKEND
                return _error(500, f"generation failed: {error}")
            outcome.compute_s = time.perf_counter() - started
        self.metrics.observe_tokens(arrived, result.token_times, result.prompt_tokens)
        return result

    async def generate(self, request: web.Request) -> web.StreamResponse:
        arrived = self._begin()
        outcome = _Outcome(arrived=arrived)
        try:
            parsed = await self._parse_generate(request, outcome)
            if isinstance(parsed, web.Response):
                return parsed
            model, generation_request = parsed
            try:
                result = await self._run_generation(request, model, generation_request, outcome)
            except OverloadedError as error:
                return self._overloaded(outcome, str(error))
            if isinstance(result, web.Response):
                return result
            return web.json_response(self._generate_document(result.text, result))
        finally:
            self._record("generate", arrived, outcome)

    def _generate_document(self, text: str, result: GenerationResult | None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "model_name": self.identity.model,
            "model_version": MODEL_VERSION,
            "text_output": text,
        }
        if result is not None:
            document["finish_reason"] = result.finish_reason
            document["prompt_tokens"] = result.prompt_tokens
            document["generated_tokens"] = result.generated_tokens
        return document

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events, one per piece of text, then a last one with the finish reason.
        Errors found before the stream starts are plain 400/503 answers; after it started,
        an error becomes an event `{"error": ...}` (the status line is already sent)."""
        arrived = self._begin()
        outcome = _Outcome(arrived=arrived)
        try:
            parsed = await self._parse_generate(request, outcome)
            if isinstance(parsed, web.Response):
                return parsed
            model, generation_request = parsed
            loop = asyncio.get_running_loop()
            # None marks the end; the generator thread's pieces are queued through
            # call_soon_threadsafe, so all of them are in before its future completes.
            pieces: asyncio.Queue[str | None] = asyncio.Queue()
            cancelled = threading.Event()
            stream = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                }
            )
            forwarder: asyncio.Task[None] | None = None

            def on_text(text: str) -> None:
                loop.call_soon_threadsafe(pieces.put_nowait, text)

            async def forward() -> None:
                try:
                    finished = False
                    while not finished:
                        batch = [await pieces.get()]
                        # When the client reads slower than tokens come, send what piled
                        # up in one write instead of one write per token.
                        while not pieces.empty():
                            batch.append(pieces.get_nowait())
                        finished = batch[-1] is None
                        events = [
                            _sse(self._generate_document(text, None))
                            for text in batch
                            if text is not None
                        ]
                        if events:
                            await stream.write(b"".join(events))
                except ConnectionError:
                    cancelled.set()  # the client left: stop generating for it
                    raise

            async def start_stream() -> None:
                nonlocal forwarder
                await stream.prepare(request)
                forwarder = asyncio.ensure_future(forward())

            try:
                result = await self._run_generation(
                    request,
                    model,
                    generation_request,
                    outcome,
                    on_text=on_text,
                    before_start=start_stream,
                    cancelled=cancelled,
                )
            except OverloadedError as error:
                return self._overloaded(outcome, str(error))
            except BaseException:
                if forwarder is not None:
                    forwarder.cancel()
                raise
            if forwarder is not None:
                pieces.put_nowait(None)
                try:
                    await forwarder
                except ConnectionError:
                    outcome.code, outcome.error_reason = 499, "cancelled"
                    outcome.triton_failure = FAILURE_CANCELED
                    return stream
            if isinstance(result, web.Response):
                if not stream.prepared:
                    return result
                await stream.write(b"data: " + (result.text or "").encode() + b"\n\n")
                return stream
            if result.finish_reason == FINISH_CANCELLED:
                outcome.code, outcome.error_reason = 499, "cancelled"
                outcome.triton_failure = FAILURE_CANCELED
                return stream
            await stream.write(_sse(self._generate_document("", result)))
            await stream.write_eof()
            return stream
        except ConnectionError:
            outcome.code, outcome.error_reason = 499, "cancelled"
            outcome.triton_failure = FAILURE_CANCELED
            raise
        finally:
            self._record("generate_stream", arrived, outcome)


def _json_header_length(request: web.Request) -> int | None:
    raw = request.headers.get(_HEADER_LENGTH)
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise ProtocolError(f"{_HEADER_LENGTH} must be a non-negative integer, got {raw!r}")
    return int(raw)


def _sse(document: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(document, separators=(",", ":")).encode() + b"\n\n"


def _in_daemon_thread(work: Callable[[], None]) -> asyncio.Future[None]:
    """Run `work` in a daemon thread: a SIGTERM while a large model is still downloading
    must not wait for the download to finish before the process can exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        try:
            work()
        except BaseException as error:
            loop.call_soon_threadsafe(settle, error)
        else:
            loop.call_soon_threadsafe(settle, None)

    threading.Thread(target=run, name="model-load", daemon=True).start()
    return done


async def serve(settings: ServeSettings) -> int:
    """Run until SIGTERM/SIGINT, then drain; the exit code for the process."""
    server = ModelServer(settings)
    runner = web.AppRunner(
        server.app,
        handle_signals=False,
        access_log=None,
        # The handler of a request whose client disconnected is cancelled: that is how a
        # generation learns to stop.
        handler_cancellation=True,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    await site.start()
    log.info(
        "listening on %s:%d; model %s revision %r variant %r; execution provider %s; "
        "threads %s; max concurrency %d, max queue %d, max body %d bytes%s",
        settings.host,
        settings.port,
        settings.model,
        settings.revision,
        settings.variant,
        settings.execution_provider,
        settings.threads or "onnxruntime default",
        settings.max_concurrency,
        settings.max_queue,
        settings.max_body_bytes,
        f"; SIMULATED SLOWDOWN x{settings.sim_slowdown}" if settings.sim_slowdown > 1 else "",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    load = _in_daemon_thread(server.load)
    stopper = asyncio.ensure_future(stop.wait())
    waiters: list[asyncio.Future[Any]] = [load, stopper]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if load.done() and load.exception() is not None:
        log.error("could not load the model: %s", load.exception())
        exit_code = 1
    else:
        await stopper
        log.info("signal received: draining in-flight requests")
        await server.drain()
    stopper.cancel()
    await runner.cleanup()
    server.close()
    log.info("stopped")
    return exit_code
