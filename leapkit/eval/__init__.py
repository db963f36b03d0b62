"""Evaluation of a frozen backbone: the metrics, Revisited Oxford/Paris, the eval.json record and the stage."""
