"""Result objects of the causal tools: plain fields (numpy arrays, token strings, floats) and an
``_repr_html_`` that draws them inline in Jupyter and VS Code notebooks (HTML and CSS only, no
scripts, no network)."""

from __future__ import annotations

import html
from typing import Dict, List, Optional

import numpy as np


def _diverging(v: float) -> str:
    """Blue (−1) through white (0) to red (+1), clamped — the CLI's heatmap colours."""
    if not np.isfinite(v):
        return "#cccccc"
    t = max(-1.0, min(1.0, float(v)))
    end = (33, 102, 172) if t < 0 else (178, 24, 43)
    a = abs(t)
    r, g, b = (round(255 + (e - 255) * a) for e in end)
    return f"#{r:02x}{g:02x}{b:02x}"


def _viridis(t: float) -> str:
    """The CLI's sequential colour scale: dark purple (0) to yellow (1), clamped."""
    stops = [(68, 1, 84), (72, 40, 120), (62, 73, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137), (53, 183, 121), (110, 206, 88), (181, 222, 43), (253, 231, 37)]
    t = min(1.0, max(0.0, float(t) if np.isfinite(t) else 0.0)) * 9
    i = min(8, int(t))
    f = t - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(stops[i], stops[i + 1]))
    return f"#{r:02x}{g:02x}{b:02x}"


def _ink(v: float) -> str:
    return "#fff" if np.isfinite(v) and abs(v) > 0.6 else "#000"


def _grid_html(title: str, rows: List[str], cols: List[str], values: np.ndarray) -> str:
    head = "".join(f"<th style='padding:2px 4px;font-weight:normal'>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in reversed(range(len(rows))):  # the last layer on top, as in the PNG
        cells = "".join(
            f"<td style='background:{_diverging(v)};color:{_ink(v)};padding:2px 4px;text-align:right'>{v:.2f}</td>"
            for v in values[r]
        )
        body.append(f"<tr><th style='padding:2px 4px;font-weight:normal'>{html.escape(rows[r])}</th>{cells}</tr>")
    return (
        f"<div style='display:inline-block;vertical-align:top;margin:0 16px 8px 0'><b>{html.escape(title)}</b>"
        f"<table style='border-collapse:collapse;font:11px monospace'>{''.join(body)}"
        f"<tr><th></th>{head}</tr></table></div>"
    )


class PatchResult:
    """Activation patching (``Model.patch``): ``normalized[site]`` is ``[n_layers, n_positions]``
    (``heads``: ``[n_layers, n_heads]``), 0 where the patch restores nothing of the clean answer and
    1 where it restores all of it; ``metric[site]`` holds the metric itself."""

    def __init__(self, data: dict, clean_tokens: List[str], corrupted_tokens: List[str], metric_name: str, head_position: Optional[int]):
        self.clean_tokens = clean_tokens
        self.corrupted_tokens = corrupted_tokens
        self.metric_name = metric_name
        self.head_position = head_position
        self.clean = float(data["clean"])
        self.corrupted = float(data["corrupted"])
        self.normalized: Dict[str, np.ndarray] = {
            k: np.asarray(v["normalized"], dtype=np.float32) for k, v in data["sites"].items()
        }
        self.metric: Dict[str, np.ndarray] = {k: np.asarray(v["metric"], dtype=np.float32) for k, v in data["sites"].items()}

    @property
    def sites(self) -> List[str]:
        return list(self.normalized)

    def columns(self, site: str) -> List[str]:
        """The column labels of a site's grid: tokens (clean/corrupted where they differ) or heads."""
        if site == "heads":
            return [f"h{h}" for h in range(self.normalized[site].shape[1])]
        return [a if a == b else f"{a}/{b}" for a, b in zip(self.clean_tokens, self.corrupted_tokens)]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in self.normalized.items())
        return f"PatchResult({self.metric_name}: clean {self.clean:.4f}, corrupted {self.corrupted:.4f}; {shapes})"

    def _repr_html_(self) -> str:
        grids = "".join(
            _grid_html(
                site if site != "heads" or self.head_position is None else f"heads at position {self.head_position}",
                [str(l) for l in range(v.shape[0])],
                self.columns(site),
                v,
            )
            for site, v in self.normalized.items()
        )
        return (
            f"<div><div style='font:13px sans-serif;margin-bottom:6px'>activation patching — "
            f"{html.escape(self.metric_name)}: clean {self.clean:.3f}, corrupted {self.corrupted:.3f}; "
            f"cells 0 = corrupted (white), 1 = clean (red), negative blue; rows are layers</div>{grids}</div>"
        )


class Attribution:
    """Direct logit attribution (``Model.attribute``) at one position: ``embed`` (float),
    ``attn`` and ``mlp`` ``[n_layers]``, ``heads`` ``[n_layers, n_heads]`` (each row sums to
    ``attn``); they sum to ``direct``, the final residual's projection through the final norm with
    its scale frozen, which is ``logit`` before any soft-capping."""

    def __init__(self, data: dict, tokens: List[str], target: str):
        self.tokens = tokens
        self.target = target
        self.position = int(data["position"])
        self.embed = float(data["embed"])
        self.attn = np.asarray([l["attn"] for l in data["layers"]], dtype=np.float32)
        self.mlp = np.asarray([l["mlp"] for l in data["layers"]], dtype=np.float32)
        self.heads = np.asarray([l["heads"] for l in data["layers"]], dtype=np.float32)
        self.direct = float(data["direct"])
        self.logit = float(data["logit"])

    def total(self) -> float:
        """The sum of the parts (equals ``direct`` up to float error)."""
        return self.embed + float(self.attn.sum(dtype=np.float64) + self.mlp.sum(dtype=np.float64))

    def top_heads(self, k: int = 10) -> List[tuple]:
        """The ``k`` heads with the largest share by size: (layer, head, share)."""
        flat = np.argsort(-np.abs(self.heads), axis=None)[:k]
        return [(int(i // self.heads.shape[1]), int(i % self.heads.shape[1]), float(self.heads.flat[i])) for i in flat]

    def __repr__(self) -> str:
        return f"Attribution({self.target} at position {self.position}: direct {self.direct:.4f}, logit {self.logit:.4f})"

    def _repr_html_(self) -> str:
        scale = max(abs(self.embed), float(np.abs(self.attn).max(initial=0)), float(np.abs(self.mlp).max(initial=0)), 1e-9)

        def bar(v: float, colour: str) -> str:
            w = round(60 * abs(v) / scale)
            side = "margin-left:60px" if v >= 0 else f"margin-left:{60 - w}px"
            return f"<div style='{side};width:{w}px;height:10px;background:{colour}'></div>"

        rows = [f"<tr><td>embed</td><td style='text-align:right'>{self.embed:+.3f}</td><td>{bar(self.embed, '#0072b2')}</td><td></td><td></td></tr>"]
        for l in range(len(self.attn)):
            a, m = float(self.attn[l]), float(self.mlp[l])
            rows.append(
                f"<tr><td>{l}</td><td style='text-align:right'>{a:+.3f}</td><td>{bar(a, '#d55e00')}</td>"
                f"<td style='text-align:right'>{m:+.3f}</td><td>{bar(m, '#009e73')}</td></tr>"
            )
        heads = ", ".join(f"L{l}H{h} {v:+.3f}" for l, h, v in self.top_heads(5))
        token = html.escape(repr(self.tokens[self.position]))
        return (
            f"<div style='font:12px monospace'><div style='font:13px sans-serif'>direct logit attribution of "
            f"{html.escape(self.target)} at position {self.position} ({token}): parts sum to {self.total():.3f}, "
            f"the model's value {self.logit:.3f}</div>"
            f"<table style='border-collapse:collapse'><tr><th>layer</th><th colspan=2>attention</th><th colspan=2>MLP</th></tr>"
            f"{''.join(rows)}</table><div>top heads: {html.escape(heads)}</div></div>"
        )
