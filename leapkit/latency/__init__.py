"""Latency: `leapkit bench` times a model's formats on this machine and judges a target's budget.

    leapkit.latency.bench.bench(model, target, ...) -> BenchReport (bench/<target>.json and .md)

One concept per module:

- artifacts: what MODEL names (run, export folder, .onnx, engine) as the artefacts to bench
- timing: the timer, latency statistics, CPU thread counts, the Method record (how it was measured)
- measure: one artefact in its runtime (leapkit.runtimes), its thread count chosen, timed
- cost: FLOPs and bytes of one inference, and the roofline estimate for the target
- machine: the environment fingerprint (CPU, GPU, Jetson, versions)
- verdict: which result is judged against the budget, PASS/FAIL and the warnings
- report: the BenchReport and BenchResult records, the latency and method tables, the Markdown
- bench: the orchestrator, a BenchPlan checked before anything runs
"""
