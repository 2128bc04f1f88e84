"""A plain ONNX model served through v2 infer: one onnxruntime InferenceSession, its inputs and
outputs as the model metadata, and request validation against them before anything runs."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from slmops.runtime.protocol import (
    DATATYPE_TO_NUMPY,
    ONNX_TYPE_TO_DATATYPE,
    InferRequest,
    ProtocolError,
)
from slmops.runtime.slowdown import Slowdown


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    # -1 for a dimension the model leaves open (symbolic or None in ONNX)
    shape: tuple[int, ...]

    def as_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _spec(node: Any) -> TensorSpec:
    datatype = ONNX_TYPE_TO_DATATYPE.get(node.type)
    if datatype is None:
        raise ValueError(f"tensor {node.name!r} has type {node.type}, which v2 cannot carry")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorSpec(name=node.name, datatype=datatype, shape=shape)


def find_onnx_file(path: Path) -> Path:
    if path.is_file():
        return path
    candidates = sorted(path.glob("*.onnx"))
    if len(candidates) != 1:
        raise ValueError(
            f"{path} must hold exactly one .onnx file for plain inference, found {len(candidates)}"
        )
    return candidates[0]


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def providers_for(execution_provider: str) -> list[str]:
    if execution_provider == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError(
                "--execution-provider cuda asked for, but this onnxruntime build has no "
                "CUDAExecutionProvider (install onnxruntime-gpu)"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _element_count(inputs: Mapping[str, npt.NDArray[Any]]) -> int:
    return sum(int(array.size) for array in inputs.values())


def _as_strings(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    # onnxruntime takes string tensors as str; v2 BYTES arrive as bytes.
    decoded = [e.decode(errors="replace") if isinstance(e, bytes) else str(e) for e in array.flat]
    return np.array(decoded, dtype=np.str_).reshape(array.shape)


# A run expected to take less than this is done on the event loop: handing it to a worker
# thread costs a thread wake-up (tens of microseconds on an idle machine, far more on a busy
# one), more than the work itself, while blocking the loop this briefly delays nobody more
# than parsing one request does.
INLINE_BUDGET_S = 50e-6
# Only small requests qualify: the run time was learnt on small inputs.
INLINE_MAX_ELEMENTS = 4096


class OnnxInferenceModel:
    platform = "onnxruntime_onnx"

    def __init__(
        self, path: Path, threads: int, execution_provider: str, slowdown: Slowdown
    ) -> None:
        self.path = find_onnx_file(path)
        self._session = ort.InferenceSession(
            str(self.path),
            sess_options=session_options(threads),
            providers=providers_for(execution_provider),
        )
        self.inputs = tuple(_spec(node) for node in self._session.get_inputs())
        self.outputs = tuple(_spec(node) for node in self._session.get_outputs())
        self._inputs_by_name = {spec.name: spec for spec in self.inputs}
        self._output_names = [spec.name for spec in self.outputs]
        self._slowdown = slowdown
        # Moving average of the model's run time on small requests; starts at "slow" so
        # nothing runs inline before warm-up has measured it.
        self._typical_run_s = float("inf")

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def validate(self, request: InferRequest) -> None:
        """Reject a request the session would choke on, with a message a user can act on."""
        for name, array in request.inputs.items():
            spec = self._inputs_by_name.get(name)
            if spec is None:
                raise ProtocolError(
                    f"unexpected input '{name}' (the model takes {', '.join(self._inputs_by_name)})"
                )
            given = request.input_datatypes[name]
            if given != spec.datatype:
                raise ProtocolError(
                    f"input '{name}': datatype {given} given, the model takes {spec.datatype}"
                )
            if len(array.shape) != len(spec.shape) or any(
                want not in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
            ):
                raise ProtocolError(
                    f"input '{name}': shape {list(array.shape)} does not match the model's "
                    f"{list(spec.shape)}"
                )
        missing = [name for name in self._inputs_by_name if name not in request.inputs]
        if missing:
            raise ProtocolError(f"missing input(s): {', '.join(missing)}")
        if request.requested_outputs is not None:
            unknown = [
                o.name for o in request.requested_outputs if o.name not in self._output_names
            ]
            if unknown:
                raise ProtocolError(f"unknown output(s): {', '.join(unknown)}")

    def run(self, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        feed = {
            name: (_as_strings(array) if array.dtype == np.object_ else array)
            for name, array in inputs.items()
        }
        started = time.perf_counter()
        results = self._session.run(self._output_names, feed)
        elapsed = time.perf_counter() - started
        self._slowdown.stretch(elapsed)
        if _element_count(inputs) <= INLINE_MAX_ELEMENTS:
            self._typical_run_s += 0.1 * (elapsed - self._typical_run_s)
        return dict(zip(self._output_names, results, strict=True))

    def runs_inline(self, inputs: Mapping[str, npt.NDArray[Any]]) -> bool:
        """Whether this request is cheap enough to run on the event loop (see INLINE_BUDGET_S).
        Never under the simulated slowdown: its sleep must not block the loop."""
        return (
            self._slowdown.factor == 1.0
            and self._typical_run_s < INLINE_BUDGET_S
            and _element_count(inputs) <= INLINE_MAX_ELEMENTS
            and not any(array.dtype == np.object_ for array in inputs.values())
        )

    def warm_up(self) -> None:
        """One run on zeros, so the first real request does not pay for lazy allocation."""
        feed: dict[str, npt.NDArray[Any]] = {}
        for spec in self.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.shape)
            if spec.datatype == "BYTES":
                feed[spec.name] = np.full(shape, "", dtype=np.str_)
            else:
                feed[spec.name] = np.zeros(shape, dtype=DATATYPE_TO_NUMPY[spec.datatype])
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            self._session.run(self._output_names, feed)
            timings.append(time.perf_counter() - started)
        if sum(int(a.size) for a in feed.values()) <= INLINE_MAX_ELEMENTS:
            self._typical_run_s = sorted(timings)[len(timings) // 2]
