"""Runs INSIDE the Python 3.13 venv that holds nvidia-pytriton (see triton_peer.py): a real
Triton Inference Server whose model is a Python function running the same onnxruntime session
our server runs. Usage: python triton_peer_main.py MODEL.onnx NAME HTTP GRPC METRICS"""

import sys

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    model_path, name, http_port, grpc_port, metrics_port = sys.argv[1:6]
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    (model_output,) = session.get_outputs()
    features = int(model_input.shape[1])

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        (result,) = session.run([model_output.name], {model_input.name: inputs[model_input.name]})
        return {model_output.name: result}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=int(http_port),
        grpc_address="127.0.0.1",
        grpc_port=int(grpc_port),
        metrics_port=int(metrics_port),
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=name,
            infer_func=infer,
            inputs=[Tensor(name=model_input.name, dtype=np.float32, shape=(features,))],
            outputs=[Tensor(name=model_output.name, dtype=np.float32, shape=(features,))],
            config=ModelConfig(max_batch_size=64),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
