"""Each target profile's published latency model against every measurement it cites.

For every profile with a ``latency_model`` section, predict each cited measurement with the profile's
published efficiencies (``leapkit.planning.latency_model.published_model``) and list predicted over
measured, per use: ``fit`` (the efficiencies were set from it), ``check`` (held out) and ``bound`` (a
timing of the backbone and more, which the prediction must not exceed). tests/test_planning_published.py
asserts the ranges; this script writes the figures the docs and the profiles quote. It times nothing:
it runs in a second on any machine.

    python benchmarks/published_models.py   # writes benchmarks/results/published_models.{md,json}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leapkit.planning.latency_model import published_model
from leapkit.planning.shape import of_timm
from leapkit.profiles import list_targets, load_target
from leapkit.tables import Table

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "published_models"


def rows() -> list[dict[str, Any]]:
    """One row per cited measurement: the target, the figure, the prediction and its range."""
    out = []
    for name in list_targets():
        profile = load_target(name)
        if profile.latency_model is None:
            continue
        model = published_model(profile)
        for m in profile.latency_model.measurements:
            p = model.predict(of_timm(m.model, m.img_size), m.precision, batch=m.batch)
            out.append({"target": name, "use": m.use, "model": m.model, "img_size": m.img_size, "batch": m.batch,
                        "precision": m.precision, "measured_ms": m.ms, "predicted_ms": round(p.ms, 3),
                        "range_ms": [round(p.low_ms, 3), round(p.high_ms, 3)],
                        "predicted_over_measured": round(p.ms / m.ms, 3), "source": m.source})
    return out


def spans(found: list[dict[str, Any]]) -> Table:
    """Per target and use: how many figures and the span of predicted over measured."""
    table = Table.of("target", "use", "figures", "predicted / measured (min-max)", right=("figures",))
    groups: dict[tuple[str, str], list[float]] = {}
    for r in found:
        groups.setdefault((r["target"], r["use"]), []).append(r["predicted_over_measured"])
    for (target, use), ratios in sorted(groups.items()):
        table.add(target, use, len(ratios), f"{min(ratios):.2f}-{max(ratios):.2f}")
    return table


def main() -> None:
    found = rows()
    detail = Table.of("target", "use", "model", "px", "batch", "precision", "measured ms", "predicted ms (range)",
                      "predicted / measured", right=("px", "batch", "measured ms", "predicted ms (range)",
                                                     "predicted / measured"))
    for r in found:
        low, high = r["range_ms"]
        detail.add(r["target"], r["use"], r["model"], r["img_size"], r["batch"], r["precision"],
                   f"{r['measured_ms']:g}", f"{r['predicted_ms']:.3g} ({low:.3g}-{high:.3g})",
                   f"{r['predicted_over_measured']:.2f}")
    md = ["# Published latency models against the measurements they cite", "",
          "Command: `python benchmarks/published_models.py` (no timing; any machine gives the same figures). "
          "Sources: each profile's `latency_model.measurements` in `profiles/targets/`.", "",
          spans(found).to_markdown(), "", detail.to_markdown(), ""]
    OUT.with_suffix(".md").write_text("\n".join(md))
    OUT.with_suffix(".json").write_text(json.dumps({"command": "python benchmarks/published_models.py",
                                                    "rows": found}, indent=2) + "\n")
    print(spans(found).to_markdown())


if __name__ == "__main__":
    main()
