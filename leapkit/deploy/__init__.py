"""Export: a run's student as ONNX (fp32, fp16, int8 Q/DQ) or OpenVINO IR, checked, and bundled for its target.

    leapkit.export(run, target="jetson")  # leapkit.deploy.export.export -> RUN/export/<target>/

One concept per module: plan (the validated request), onnx_graph (the fp32 graph and its checks),
onnx_fp16, onnx_int8 (Q/DQ layouts, the quantizer), int8_calibration (activation ranges and their
cache), int8_blocks (units of the ViT and the error each adds), int8_report (that record and its
tables), int8_fallback (the INT8 variant: strict, then block by block out of INT8 until it passes),
openvino_ir (IR copies for OpenVINO targets), export_data (real images for calibration, parity and
the probe), parity
(compare, the pass/fail rule, probe accuracy, device-check tolerances), bundle (the deploy scripts and
README; trtexec's flags are leapkit.trtexec), check_outputs (the device-side checker each bundle carries),
trt_build (engines where TensorRT and a GPU exist), manifest (the record), summary (its table),
progress (the progress bar), export (the orchestrator).
"""
