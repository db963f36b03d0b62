"""Planning before training: a latency model per target, fitted on the target, and `leapkit plan`.

- :mod:`~leapkit.planning.shape`, :mod:`~leapkit.planning.workload`: a ViT's shape and the work of its layers;
- :mod:`~leapkit.planning.latency_model`: efficiencies, predictions with a range;
- :mod:`~leapkit.planning.target_model`: which model a target gets (its latency-model fit, else published), and
  :func:`predict_onnx`;
- :mod:`~leapkit.planning.microbench`, :mod:`~leapkit.planning.device_timing`, :mod:`~leapkit.planning.fit_file`,
  :mod:`~leapkit.planning.fit`: the microbenchmarks, timed on the target, and the latency-model fit
  (`leapkit calibrate`, which writes the calibration file);
- :mod:`~leapkit.planning.candidates`, :mod:`~leapkit.planning.train_cost`, :mod:`~leapkit.planning.plan`,
  :mod:`~leapkit.planning.frontier`: candidate students, their training cost, the plan and its PNG (`leapkit plan`).
"""

from leapkit.planning.latency_model import Efficiencies, LatencyModel, Prediction
from leapkit.planning.shape import VitShape, of_model, of_onnx, of_timm
from leapkit.planning.target_model import model_for, predict_onnx

__all__ = ["Efficiencies", "LatencyModel", "Prediction", "VitShape", "model_for", "of_model", "of_onnx", "of_timm",
           "predict_onnx"]
