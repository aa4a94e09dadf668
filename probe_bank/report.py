"""`recency-audit report`: a self-contained HTML page (figures embedded, also saved as PNG).

Every number on the page is read from the bank's hash-verified files (metrics.json, scan.json,
centroids.json, retention.json); the only computation is the centroid line of `--extra-run`
runs, which uses the same capture and cross-fitted geometry as the bank build.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probe_bank.bank import FAMILY_ROWS, read_manifest, verify_files
from probe_bank.evidence import bank_evidence
from probe_bank.records import RunRecord
from probe_bank.schemas import FAMILIES, HEADLINE, BankManifest, BankMetrics, ScanRow


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path, name: str) -> str:
    path = out / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return name


def centroid_figure(out: Path, lines: list[tuple[str, dict]]) -> str:
    """Stages 1..6 joined in order (one line per run), never-trained control entities as a cross."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for label, c in lines:
        x = np.array(c["x"], dtype=float)
        y = np.array(c["y"], dtype=float)
        (line,) = ax.plot(x[1:7], y[1:7], "-o", label=label)
        for k in range(1, 7):
            ax.annotate(str(k), (x[k], y[k]), textcoords="offset points", xytext=(4, 4))
        ax.plot(x[0], y[0], "x", color=line.get_color(), markersize=9)
    ax.set_xlabel("x: normalised (c6 - c1)")
    ax.set_ylabel("y: top PC orthogonal to x")
    ax.set_title("Cross-fitted stage centroids (x = never trained)")
    ax.legend(fontsize=8)
    return _save(fig, out, "centroids.png")


def grid_figure(out: Path, metrics: dict) -> str:
    """The 6x6 held-out pairwise accuracy heatmap."""
    plt = _plt()
    grid = np.array(metrics["pairwise_accuracy"], dtype=float)
    fig, ax = plt.subplots(figsize=(5, 4.3))
    im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="coolwarm")  # white = chance
    for i in range(6):
        for j in range(6):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(6), [str(k) for k in range(1, 7)])
    ax.set_yticks(range(6), [str(k) for k in range(1, 7)])
    ax.set_xlabel("stage")
    ax.set_ylabel("stage")
    ax.set_title("Pairwise probe accuracy (held-out entities)")
    fig.colorbar(im, ax=ax)
    return _save(fig, out, "pairwise_grid.png")


def scan_figure(out: Path, scan: list[ScanRow]) -> str:
    """Held-out stage 1 vs 6 and early/late accuracy per layer, one line per position."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, key in zip(axes, ("stage1_vs_stage6", "early_vs_late"), strict=True):
        for pos in sorted({r.position for r in scan}):
            rows = sorted((r for r in scan if r.position == pos), key=lambda r: r.layer)
            layers = [r.layer for r in rows]
            figures = [getattr(r, key) for r in rows]
            vals = np.array([f.value for f in figures], dtype=float)
            ci = np.array([f.ci95 for f in figures], dtype=float)
            (line,) = ax.plot(layers, vals, "-o", label=pos)
            ax.fill_between(layers, ci[:, 0], ci[:, 1], alpha=0.2, color=line.get_color())
            ax.set_xticks(layers)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("layer (blocks.{i}.hook_resid_post)")
        ax.set_title(key)
    axes[0].set_ylabel("held-out accuracy")
    axes[0].legend()
    return _save(fig, out, "layer_scan.png")


def baselines_figure(out: Path, metrics: dict) -> str:
    """Probe vs each scalar baseline (and the statistic-balanced probes) on the same splits."""
    plt = _plt()
    keys = ("stage1_vs_stage6", "early_vs_late")
    rows = [("probe", metrics)] + sorted((metrics.get("baselines") or {}).items())
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
    for k, key in enumerate(keys):
        for i, (_name, m) in enumerate(rows):
            entry = m.get(key) or {}
            v = entry.get("value")
            if v is None:
                continue
            lo, hi = entry["ci95"]
            yv = i + (k - 0.5) * 0.35
            ax.errorbar(
                v,
                yv,
                xerr=[[v - lo], [hi - v]],
                fmt="o",
                color=f"C{k}",
                label=key if i == 0 else None,
            )
    ax.set_yticks(range(len(rows)), [n for n, _ in rows])
    ax.invert_yaxis()
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("held-out accuracy (95% bootstrap interval over entities)")
    ax.set_title("Probe vs scalar baselines and statistic-balanced probes")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=2, fontsize=8)
    return _save(fig, out, "baselines.png")


def families_figure(out: Path, rows: dict[str, np.ndarray]) -> str:
    """Where each class sits on the calibration model, by the fused family's held-out P(after
    the bank): never trained, stages 1..6 (learned before the bank) and the calibration pool."""
    if "oof_fused" not in rows:  # banks built before the rows kept held-out probabilities
        return ""
    plt = _plt()
    on_cal = rows["on_reference"] == 0
    p_after = rows["oof_fused"][:, 7]
    labels = ["never", *(str(k) for k in range(1, 7)), "after bank"]
    data = [p_after[on_cal & (rows["label"] == c)] for c in range(8)]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.boxplot(data, tick_labels=labels, showfliers=False)
    ax.set_xlabel("class of the entity (calibration model)")
    ax.set_ylabel("fused P(after the bank), held out")
    ax.set_title("Entities learned after the bank vs stages 1..6 (entity-held-out)")
    return _save(fig, out, "families.png")


def families_table(metrics: dict) -> str:
    """Held-out figures of every evidence family (banks with a calibration)."""
    fam = metrics.get("families")
    if not fam:
        return "<p>No evidence families (the bank was built without a calibration).</p>"
    keys = (
        "stage1_vs_stage6",
        "early_vs_late",
        "stage_accuracy",
        "after_bank_recall",
        "after_bank_false_alarms",
        "after_vs_stage6_auc",
    )
    rows = [(html.escape(n), *(_fmt(fam[n].get(k)) for k in keys)) for n in FAMILIES if n in fam]
    return _table(("family", *keys), rows) + f"<p>{html.escape(str(fam.get('what', '')))}</p>"


def _fmt(entry: Any) -> str:
    if entry is None:
        return "n/a"
    if isinstance(entry, dict) and "value" in entry:
        v, (lo, hi), n = entry["value"], entry["ci95"], entry["n_entities"]
        if v is None:
            return "n/a"
        lo_s = "n/a" if lo is None else f"{lo:.3f}"
        hi_s = "n/a" if hi is None else f"{hi:.3f}"
        return f"{v:.3f} [{lo_s}, {hi_s}] (n={n})"
    return html.escape(str(entry))


def _fmt_null(entry: dict) -> str:
    lo, hi = entry["null_95"]
    return (
        f"p = {entry['p_value']:.3f} (observed {entry['observed']:.3f}; shuffled labels "
        f"{entry['null_mean']:.3f} [{lo:.3f}, {hi:.3f}], {entry['n_permutations']} shuffles)"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def retention_table(retention: list[dict]) -> str:
    """The trainer's retention after the last stage recorded."""
    if not retention:
        return "<p>No retention.json in this bank (the run did not record one).</p>"
    last = retention[-1]
    cols = ("split", "train_acc", "train_loss", "heldout_acc", "heldout_loss", "n_entities")
    rows = [
        [
            html.escape(f"{r.get(c):.3f}" if isinstance(r.get(c), float) else str(r.get(c)))
            for c in cols
        ]
        for r in last.get("rows", [])
    ]
    return f"<p>After {html.escape(str(last.get('after')))}:</p>" + _table(cols, rows)


def extra_centroids(run_dir: Path, manifest: BankManifest) -> dict:
    """Cross-fitted centroids of another run's final model at the bank's layer and position."""
    from probe_bank.capture import capture, hook_name
    from probe_bank.heldout.metrics import centroid_metrics
    from probe_bank.modeling import load_model
    from probe_bank.run_dir import load_run, probe_data

    run = load_run(run_dir)
    model, tok = load_model(run.model_dir)
    table = probe_data(run)
    cap = capture(
        model,
        tok,
        [p.prompt for p in table.probes],
        layers=[manifest.layer],
        positions=[manifest.position],
        alias_spans=[p.alias_char_span for p in table.probes],
    )
    X = cap.acts[hook_name(manifest.layer)][manifest.position]
    _, centroids = centroid_metrics(table.with_features(X), 50, manifest.seed)
    return centroids


def _img(out: Path, name: str, alt: str) -> str:
    data = base64.b64encode((out / name).read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _run_label(run_dir: Path) -> str:
    """A legend label for a run: its seed from run.json, else its last two path parts."""
    try:
        seed = RunRecord.read(run_dir / "run.json").seed
        return f"{run_dir.parent.name}/{run_dir.name} (seed {seed})"
    except (OSError, ValueError, KeyError):
        return f"{run_dir.parent.name}/{run_dir.name}"


def _rows(bank: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(bank / FAMILY_ROWS))


def write_report(
    bank_dir: str | Path, out_dir: str | Path, *, extra_runs: Sequence[Path] = ()
) -> Path:
    """Write REPORT_DIR/index.html and the PNG figures; returns the HTML path."""
    bank = Path(bank_dir)
    manifest = read_manifest(bank)
    verify_files(bank, manifest)

    def load(name: str, default: Any) -> Any:
        return json.loads((bank / name).read_text("utf-8")) if name in manifest.files else default

    # metrics.json is checked against its schema, then read as plain data for the page
    parsed = BankMetrics.model_validate(load("metrics.json", {}))
    metrics = parsed.model_dump(mode="json")
    evidence = bank_evidence(parsed)  # the verdict the service serves with every score
    raw_scan = load("scan.json", None) or load("sweep.json", [])  # banks before the rename
    scan = [ScanRow.model_validate(r) for r in raw_scan]
    centroids, retention = load("centroids.json", None), load("retention.json", [])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [(f"bank run (seed {manifest.seed})", centroids)] if centroids else []
    lines += [
        (f"extra: {_run_label(Path(r))}", extra_centroids(Path(r), manifest)) for r in extra_runs
    ]
    figs = [
        (centroid_figure(out, lines), "centroid line"),
        *(
            [(families_figure(out, _rows(bank)), "evidence families")]
            if FAMILY_ROWS in manifest.files
            else []
        ),
        (grid_figure(out, metrics), "pairwise grid"),
        (scan_figure(out, scan), "layer scan"),
        (baselines_figure(out, metrics), "scalar baselines vs probe"),
    ]
    headline = _table(
        ("metric", "value [95% CI] (entities)"),
        [(html.escape(label), _fmt(metrics.get(key))) for key, label in HEADLINE]
        + [
            (f"{html.escape(key)}, layer/position chosen inside each fold", _fmt(entry))
            for key, entry in (metrics.get("selection_adjusted") or {}).items()
            if isinstance(entry, dict)
        ]
        + [
            (f"{html.escape(key)}: permutation null", _fmt_null(entry))
            for key, entry in (metrics.get("permutation") or {}).items()
        ],
    )
    baseline_rows = [
        (
            html.escape(name),
            *(_fmt(m.get(k)) for k in ("stage1_vs_stage6", "early_vs_late", "stage_accuracy")),
        )
        for name, m in sorted((metrics.get("baselines") or {}).items())
    ]
    baselines = _table(
        ("baseline", "stage 1 vs 6", "early vs late", "stage (7-class)"), baseline_rows
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8">
<title>recency-audit report {html.escape(manifest.bank_id)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px}}
img{{max-width:100%}}</style></head><body>
<h1>Recency probe bank {html.escape(manifest.bank_id)}</h1>
<p>Model fingerprint <code>{manifest.model_fingerprint[:16]}</code>, layer {manifest.layer}
(<code>{html.escape(manifest.hook)}</code>), position <code>{html.escape(manifest.position)}</code>,
built {html.escape(manifest.created_at)}; {metrics.get("n_entities", "?")} entities
(per class 0..6: {metrics.get("n_entities_per_class", "?")}). Every accuracy is measured on entities
the probe never saw; intervals are 95% bootstraps over entities (they do not include refitting
variance). Chance: 0.5 for the binary probes, {metrics.get("stage_chance", 1 / 7):.3f} for the
7-class estimator.</p>
<h2>Headline</h2>
<p class="verdict {html.escape(evidence.verdict)}"><b>Verdict: {html.escape(evidence.verdict)}.</b>
{html.escape(evidence.note)}.</p>
{headline}
<p>{html.escape(str(metrics.get("selection", "")))}</p>
{"".join(_img(out, name, alt) for name, alt in figs if name)}
<h2>Scalar baselines (same splits)</h2>{baselines}
<h2>Evidence families (membership signals, not the study's representational effect)</h2>
{families_table(metrics)}
<h2>Retention (from the trainer)</h2>{retention_table(retention)}
</body></html>
"""
    path = out / "index.html"
    path.write_text(page, "utf-8")
    return path
