"""Runtimes: one Runner protocol (base) and one module per backend leapkit drives.

    base               the Runner protocol, the graph's tensor names, run_batched
    torch_runner       PyTorch eager or torch.compile, CPU or CUDA
    ort_runner         ONNX Runtime, its execution providers
    openvino_runner    OpenVINO IR or ONNX on the CPU, explicit threads and precision hint
    signal_stack       the alternate signal stack OpenVINO's CPU plugin takes from a thread
    tensorrt_runner    a serialized TensorRT engine through cuda-python (no torch)

Facts about the host (CPU features, a Jetson, CUDA GPUs) are :mod:`leapkit.host`'s. Importing a
runner module imports its runtime only when a runner is made; none of them but torch_runner
imports torch.
"""

from leapkit.runtimes.base import Runner

__all__ = ["Runner"]
