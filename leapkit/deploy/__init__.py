"""Export: a run's student as ONNX (fp32, fp16, int8 Q/DQ), checked, and bundled for its target.

    leapkit.deploy.export.export(plan) -> RUN/export/<target>/ (see manifest.py for what it records)

One concept per module: onnx_graph (the fp32 graph and its checks), onnx_fp16, onnx_int8,
calibration (real images for calibration, parity and the probe), parity (compare, verdicts,
probe accuracy), bundle (the TensorRT deploy scripts and README), trt_build (engines where
TensorRT and a GPU exist), manifest (the record), export (the orchestrator).
"""
