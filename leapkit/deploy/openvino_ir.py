"""OpenVINO IR copies of the exported ONNX graphs, for CPU targets that deploy with OpenVINO.

    write_ir(Path("model_int8.onnx"), Path("model_openvino_int8.xml"), hint="bf16")

OpenVINO reads ONNX itself; the IR saves the conversion at load time and records, in the model's
``runtime_options``, the precision hint the variant was checked with. OpenVINO's CPU plugin does
not apply that entry by itself (2026.4), so :class:`leapkit.runtimes.openvino_runner.OpenVINORunner` reads it and
passes it explicitly, and the bundle README shows the same call.

- fp32: the fp32 graph with the hint ``f32`` (OpenVINO's own default is bf16 wherever the CPU has it).
- bf16: no file of its own: the fp32 IR run with the hint ``bf16``, a variant only where the CPU has
  bf16 arithmetic (AVX512-BF16, AMX); elsewhere OpenVINO would run it in fp32.
- int8: the Q/DQ graph (ONNX Runtime's x86 layout: uint8 activations, int8 per-channel weights on
  the weight MatMuls) with the rest in bf16 where the CPU has it, else fp32.
"""

from __future__ import annotations

from pathlib import Path

from leapkit.runtimes.openvino_runner import OPENVINO_HINT_KEY, import_openvino
from leapkit.types import OpenVINOHint, Precision

OPENVINO_FILES: dict[Precision, str] = {
    "fp32": "model_openvino_fp32.xml", "bf16": "model_openvino_fp32.xml", "int8": "model_openvino_int8.xml",
}
OPENVINO_HINTS: dict[Precision, OpenVINOHint] = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}
OWN_IR: tuple[Precision, ...] = ("fp32", "int8")
"""The precisions whose ONNX graph is converted to an IR of its own (bf16 runs the fp32 one)."""


def weights_file(xml: str | Path) -> Path:
    """The ``.bin`` of an IR ``.xml``."""
    return Path(xml).with_suffix(".bin")


def write_ir(onnx_path: Path, xml_path: Path, hint: OpenVINOHint) -> None:
    """Convert an ONNX graph to an OpenVINO IR (``.xml`` and ``.bin``) that records its precision hint.

    Raises:
        MissingDependency: openvino is not installed.
    """
    ov = import_openvino(f"converting {onnx_path.name} to an OpenVINO IR")
    model = ov.convert_model(str(onnx_path))
    model.set_rt_info(hint, list(OPENVINO_HINT_KEY))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)  # weights as exported: fp32, or int8 with Q/DQ
