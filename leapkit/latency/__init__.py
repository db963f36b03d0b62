"""Latency: `leapkit bench` times a model's formats on this machine and judges a target's budget.

    leapkit.latency.bench.bench(model, target, ...) -> BenchReport (bench/<target>.json and .md)

One concept per module:

- artifacts: what MODEL names (run, export folder, .onnx, engine) as the artefacts to bench
- timing: the timer, latency statistics, CPU thread counts, the Method record (how it was measured)
- measure: one artefact in its runtime (leapkit.runtimes), its thread count chosen, timed
- cost: FLOPs and bytes of one inference, and the roofline estimate for the target
- machine: the environment fingerprint (CPU, GPU, Jetson, versions)
- verdict: which result is judged against the budget, PASS/FAIL and the warnings
- records: the BenchReport and BenchResult records (bench/<target>.json) and the comparison with a baseline
- regression: each result against the same result in a baseline, noise-aware
- render: the latency and method tables, the Markdown, and the writing of bench/<target>.json and .md
- request: every option of `leapkit bench` as one BenchRequest
- bench: the orchestrator: a BenchRequest checked before anything runs, resolved into a BenchPlan
"""
