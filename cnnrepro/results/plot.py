"""Top-1 accuracy against operations, marker area by parameters (Canziani et al. 2016, Fig. 2).

Drawn from the rows of ``cnnrepro.results.table``: one point per paper number (the model's
single-crop number where it has one, else the first protocol it reports; the marker shape names
the protocol, so points under different protocols are never silently mixed) and one per
reproduced group. Reproduced points on another evaluation set than ImageNet's (e.g. the 10-class
demo) are drawn hollow and labelled with their set.
"""

from __future__ import annotations

from pathlib import Path

from cnnrepro.errors import UserError

__all__ = ["accuracy_points", "plot_accuracy_vs_macs"]

PROTOCOL_ORDER = ("center", "flip", "tencrop", "multicrop144", "dense", "multiscale_fc", "multicrop150",
                  "multicrop150+dense")
MARKERS = {"center": "o", "flip": "D", "tencrop": "s", "multicrop144": "^", "dense": "P", "multiscale_fc": "v",
           "multicrop150": "<", "multicrop150+dense": ">"}


def _base(protocol_label: str) -> str:
    return protocol_label.split(" ", 1)[0]


def accuracy_points(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(paper points, reproduced points): dicts with model, top1 (accuracy %), gmacs, params_m, protocol."""
    paper: dict[str, dict] = {}
    for r in rows:
        if r["paper_top1_err"] is None or r["gmacs"] is None or r["runs"]:
            continue
        proto = _base(r["protocol"])
        rank = PROTOCOL_ORDER.index(proto) if proto in PROTOCOL_ORDER else len(PROTOCOL_ORDER)
        cur = paper.get(r["model"])
        if cur is None or rank < cur["rank"]:
            paper[r["model"]] = {"model": r["model"], "top1": 100.0 - r["paper_top1_err"], "gmacs": r["gmacs"],
                                 "params_m": r["params_m"], "protocol": proto, "rank": rank, "data": r["data"]}
    repro = [
        {"model": r["model"], "top1": 100.0 - r["top1_err"], "gmacs": r["gmacs"], "params_m": r["params_m"],
         "protocol": _base(r["protocol"]), "data": r["data"]}
        for r in rows if r["runs"] and r["top1_err"] is not None and r["gmacs"] is not None
    ]
    return list(paper.values()), repro


def _place_labels(fig, ax, labels, fontsize: float = 7.0) -> None:
    """Greedy label placement: for each point, the first of a ring of offsets whose text box
    overlaps no label placed so far (a thin leader line when the label sits away from its point)."""
    fig.canvas.draw()  # fixes the axes limits, so data -> pixel transforms are final
    char_w, line_h = fontsize * 0.62 * fig.dpi / 72, fontsize * 1.25 * fig.dpi / 72
    taken: list[tuple[float, float, float, float]] = []
    ring = [(4, 2), (4, -10), (-4, 2), (-4, -10), (6, 12), (6, -20), (-6, 12), (-6, -20), (8, 24), (8, -32),
            (-8, 24), (-8, -32), (10, 36), (10, -44)]
    for p, text, color in sorted(labels, key=lambda t: -t[0]["top1"]):
        x, y = ax.transData.transform((p["gmacs"], p["top1"]))
        w = len(text) * char_w
        best = None
        for dx_pt, dy_pt in ring:
            dx, dy = dx_pt * fig.dpi / 72, dy_pt * fig.dpi / 72
            x0 = x + dx if dx >= 0 else x + dx - w
            box = (x0, y + dy, x0 + w, y + dy + line_h)
            if not any(b[0] < box[2] and box[0] < b[2] and b[1] < box[3] and box[1] < b[3] for b in taken):
                best = (dx_pt, dy_pt, box)
                break
        if best is None:
            dx_pt, dy_pt = ring[0]
            x0 = x + dx_pt * fig.dpi / 72
            best = (dx_pt, dy_pt, (x0, y, x0 + w, y + line_h))
        dx_pt, dy_pt, box = best
        taken.append(box)
        far = abs(dy_pt) > 10
        ax.annotate(text, (p["gmacs"], p["top1"]), xytext=(dx_pt, dy_pt), textcoords="offset points",
                    fontsize=fontsize, color=color, ha="left" if dx_pt >= 0 else "right", va="bottom",
                    arrowprops=dict(arrowstyle="-", color="gray", lw=0.4) if far else None)


def plot_accuracy_vs_macs(rows: list[dict], out_stem: str | Path, title: str | None = None) -> list[Path]:
    """Write ``<out_stem>.png`` and ``<out_stem>.svg``; returns the two paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    paper, repro = accuracy_points(rows)
    if not paper and not repro:
        raise UserError("nothing to plot: no row has a top-1 number and a GMACs count")

    def area(params_m):  # marker area proportional to parameters, readable from 1M to 150M
        return 12 + 3.0 * (params_m or 1.0)

    fig, ax = plt.subplots(figsize=(11, 7), dpi=130)
    protos = sorted({p["protocol"] for p in paper + repro}, key=lambda p: (p not in MARKERS, p))
    for proto in protos:
        pts = [p for p in paper if p["protocol"] == proto]
        if pts:
            ax.scatter([p["gmacs"] for p in pts], [p["top1"] for p in pts], s=[area(p["params_m"]) for p in pts],
                       marker=MARKERS.get(proto, "X"), c="tab:blue", alpha=0.55, edgecolors="navy", linewidths=0.6)
        pts = [p for p in repro if p["protocol"] == proto]
        if pts:
            imagenet = [p for p in pts if str(p["data"]).startswith("ilsvrc2012")]
            other = [p for p in pts if not str(p["data"]).startswith("ilsvrc2012")]
            if imagenet:
                ax.scatter([p["gmacs"] for p in imagenet], [p["top1"] for p in imagenet],
                           s=[area(p["params_m"]) for p in imagenet], marker=MARKERS.get(proto, "X"), c="tab:red",
                           alpha=0.75, edgecolors="darkred", linewidths=0.8)
            if other:
                ax.scatter([p["gmacs"] for p in other], [p["top1"] for p in other],
                           s=[area(p["params_m"]) for p in other], marker=MARKERS.get(proto, "X"),
                           facecolors="none", edgecolors="tab:red", linewidths=1.2)
    ax.set_xscale("log")
    labels = [(p, p["model"], "black") for p in paper]
    labels += [(p, p["model"] + ("" if str(p["data"]).startswith("ilsvrc2012") else f" ({p['data']})"), "darkred")
               for p in repro]
    _place_labels(fig, ax, labels)
    ax.set_xlabel("GMACs per image at the paper's input size (multiply-accumulates; log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "Top-1 accuracy against operations (marker area ∝ parameters)")
    handles = [Line2D([], [], marker=MARKERS.get(p, "X"), ls="", color="gray", label=f"protocol: {p}") for p in protos]
    handles += [Line2D([], [], marker="o", ls="", color="tab:blue", alpha=0.6, label="paper (single model, val)")]
    if repro:
        handles += [Line2D([], [], marker="o", ls="", color="tab:red", label="reproduced (ImageNet val)"),
                    Line2D([], [], marker="o", ls="", mfc="none", mec="tab:red", label="reproduced (other data)")]
    for m in (5, 25, 100):
        handles.append(ax.scatter([], [], s=area(m), c="lightgray", edgecolors="gray", label=f"{m}M params"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, metadata={"Date": None} if p.suffix == ".svg" else None)
    plt.close(fig)
    return paths
