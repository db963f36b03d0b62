"""trtexec, TensorRT's command-line tool: the command lines leapkit gives it and the files it writes, read back.

    read_trtexec(paths) -> TrtexecImport  # leapkit.trtexec.read: logs, --exportTimes/--exportProfile, device.json

One concept per module:

- flags: the command lines (build, timing run, per-layer profiling run, output check) per TensorRT version
- read: what a set of files and folders holds, merged into timing runs, a layer profile and a device
- log: one log as timing runs (performance summaries and the context each printed)
- context: what a run was asked to do, from its command line and printed options (version, precision, batch)
- sidecars: what the files beside the figures say of a run (--exportLayerInfo, trex metadata, device.json,
  the engine's sidecar)
- exported: the JSON files trtexec exports, and statistics recomputed from ``--exportTimes``
- layers: the per-layer profile (``--exportProfile`` or the printed table), grouped per ViT block and op

Used by the deploy bundle (leapkit.deploy.bundle), the bench (leapkit.latency) and the latency model's
device timing (leapkit.planning.device_timing).
"""
