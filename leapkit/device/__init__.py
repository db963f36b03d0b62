"""The device over SSH: the link, what the device has, and the bundle's round trip through it.

One concept per module:

- ssh: ``[user@]host[:port]``, the user's ssh options, ssh and scp that never prompt, one-line HostErrors
- probe: the probe script, its ``leapkit:key=value`` lines, the device fingerprint, the TensorRT version check
- round_trip: ``leapkit bench --host``: copy a deploy bundle, build, check and time its engine, fetch the results
- tegrastats: a Jetson's tegrastats lines read (JetPack 4-6), the timing run's power and energy per inference, and
  the sampling bench_engine.sh runs on the device

``leapkit calibrate --host`` times the latency model's microbenchmarks over the same link
(leapkit.planning.device_timing). The fingerprint script a bundle runs on the device itself is
leapkit/deploy/device_info.py, shipped in every TensorRT bundle.
"""
