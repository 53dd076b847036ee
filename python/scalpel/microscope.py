"""The microscope from Python: the CLI's logit lens, attention heads, embedding neighbours and
analogies, similarity across contexts, steering-vector build, Patchscopes, neurons and PCA, each
computed by the engine's own code (the function the CLI command runs) and returned as a small
result object with plain fields and an ``_repr_html_`` that draws inline in notebooks (HTML, CSS
and SVG only: no scripts, no network)."""

from __future__ import annotations

import base64
import html
import json
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .results import _viridis

_PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"]


def _show(token: str) -> str:
    """A token made visible, as the CLI's pictures show it: leading spaces as '·', newlines as \\n."""
    lead = len(token) - len(token.lstrip(" "))
    return ("·" * lead + token[lead:]).replace("\n", "\\n").replace("\t", "\\t")


def _ink(t: float) -> str:
    return "#000" if t > 0.55 else "#fff"


def _e(s: str) -> str:
    return html.escape(s, quote=True)


class Lens:
    """The logit lens (``Model.lens``): every layer's residual stream read through the final norm and
    the unembedding. ``top_ids``/``top_probs`` are ``[n_layers, n_positions, k]``, most likely
    first; ``top_tokens[layer][position]`` the candidates' text; ``tokens`` the prompt's."""

    def __init__(self, data: dict, tokens: List[str]):
        top = [[p["top"] for p in layer["positions"]] for layer in data["layers"]]
        self.tokens = tokens
        self.top_ids = np.asarray([[[c["id"] for c in cands] for cands in layer] for layer in top], dtype=np.int64)
        self.top_probs = np.asarray([[[c["prob"] for c in cands] for cands in layer] for layer in top], dtype=np.float32)
        self.top_tokens: List[List[List[str]]] = [[[c["token"] for c in cands] for cands in layer] for layer in top]

    def at(self, layer: int, position: int = -1) -> List[Tuple[str, float]]:
        """The candidates at one layer and position: (text, probability), most likely first."""
        position = position + len(self.tokens) if position < 0 else position
        return list(zip(self.top_tokens[layer][position], self.top_probs[layer, position].tolist()))

    def __repr__(self) -> str:
        last = [self.top_tokens[l][-1][0] for l in range(len(self.top_tokens))]
        return f"Lens({len(self.top_tokens)} layers × {len(self.tokens)} positions; top-1 at the last position by layer: {last})"

    def _repr_html_(self) -> str:
        rows = []
        for l in reversed(range(len(self.top_tokens))):
            cells = []
            for p in range(len(self.tokens)):
                prob = float(self.top_probs[l, p, 0])
                tip = "\n".join(f"{json.dumps(t, ensure_ascii=False)} {float(q):.3f}" for t, q in zip(self.top_tokens[l][p], self.top_probs[l, p]))
                cells.append(
                    f"<td title='{_e(tip)}' style='background:{_viridis(prob)};color:{_ink(prob)};padding:1px 4px;white-space:pre'>"
                    f"{_e(_show(self.top_tokens[l][p][0]))}</td>"
                )
            rows.append(f"<tr><th style='font-weight:normal;padding:1px 6px'>layer {l}</th>{''.join(cells)}</tr>")
        foot = "".join(f"<th style='font-weight:normal;white-space:pre;padding:1px 4px'>{_e(_show(t))}</th>" for t in self.tokens)
        return (
            "<div style='font:11px monospace'><div style='font:13px sans-serif'>logit lens: top-1 per layer and position "
            "(shade: its probability, 0 dark to 1 bright; hover a cell for the top k)</div>"
            f"<table style='border-collapse:collapse'>{''.join(rows)}<tr><th></th>{foot}</tr></table></div>"
        )


class HeadScores(list):
    """Heads ranked by a score, best first: a list of (layer, head, score)."""

    def __init__(self, what: str, rows: List[dict]):
        super().__init__((int(r["layer"]), int(r["head"]), float(r["score"])) for r in rows)
        self.what = what

    def __repr__(self) -> str:
        head = ", ".join(f"L{l}H{h} {s:.3f}" for l, h, s in self[:5])
        return f"HeadScores({self.what}: {head}{', …' if len(self) > 5 else ''})"


class Attention:
    """Attention patterns (``Model.attention``): ``probs`` is ``[n_layers, n_heads, n_positions,
    n_positions]`` (query, key) from the engine's own attention. ``sinks()``, ``find()`` and
    ``focused()`` rank heads as ``scalpel attention --sinks/--find`` and the HTML report do; the
    notebook view shows ``shown`` (default: the most focused head) at the last query."""

    def __init__(self, model, ids: List[int], probs: np.ndarray, tokens: List[str]):
        self._model = model
        self._ids = ids
        self.probs = probs
        self.tokens = tokens
        self.shown: Optional[Tuple[int, int]] = None
        self.query = len(tokens) - 1

    def _rank(self, rank: str, **extra) -> List[dict]:
        return json.loads(self._model._engine.microscope("heads", json.dumps({"ids": self._ids, "rank": rank, **extra})))

    def _position(self, word: Union[str, int], what: str, last: bool) -> List[int]:
        if isinstance(word, (int, np.integer)):
            p = int(word) + len(self.tokens) if word < 0 else int(word)
            if not 0 <= p < len(self.tokens):
                raise ValueError(f"{what} position {word} is outside the {len(self.tokens)} tokens")
            return [p]
        if not isinstance(word, str):
            raise TypeError(f"{what} is a word or a position, not {type(word).__name__}")
        found = json.loads(self._model._engine.microscope("find_word", json.dumps({"tokens": self.tokens, "word": word})))
        return found[-1:] if last else found

    def pattern(self, layer: int, head: int) -> np.ndarray:
        """One head's ``[query, key]`` probabilities."""
        return self.probs[self._model._layer(layer), head]

    def sinks(self, top: int = 10) -> HeadScores:
        """Heads by the mean attention their later queries put on the first token."""
        return HeadScores("attention on the first token", self._rank("sinks")[:top])

    def focused(self, top: int = 10) -> HeadScores:
        """Heads by how sharply their queries look at one earlier token other than the first."""
        return HeadScores("sharpest look at one earlier non-first token", self._rank("focused")[:top])

    def find(self, query: Union[str, int], key: Union[str, int], top: int = 10) -> HeadScores:
        """Heads where ``query`` (a word's last occurrence, or a position) attends to ``key`` (every
        earlier occurrence, summed; or a position)."""
        q = self._position(query, "query", last=True)[0]
        keys = [k for k in self._position(key, "key", last=False) if k < q]
        if not keys:
            raise ValueError("the key must occur before the query (attention is causal)")
        return HeadScores(f"attention from {self.tokens[q]!r} to {self.tokens[keys[0]]!r}", self._rank("find", query=q, keys=keys)[:top])

    def show(self, layer: int, head: int, query: int = -1) -> "Attention":
        """The same maps, drawn at ``layer``/``head`` and ``query`` in a notebook."""
        other = Attention(self._model, self._ids, self.probs, self.tokens)
        other.shown = (self._model._layer(layer), head)
        other.query = query + len(self.tokens) if query < 0 else query
        return other

    def __repr__(self) -> str:
        return f"Attention({self.probs.shape[0]} layers × {self.probs.shape[1]} heads over {len(self.tokens)} tokens)"

    def _repr_html_(self) -> str:
        if self.shown is None:
            l, h, _ = self.focused(1)[0]
            self.shown = (l, h)
        l, h = self.shown
        m = self.probs[l, h]
        t = len(self.tokens)
        head = "".join(f"<th style='writing-mode:vertical-rl;font-weight:normal;white-space:pre'>{_e(_show(s))}</th>" for s in self.tokens)
        rows = []
        for q in range(t):
            cells = "".join(
                f"<td title='{m[q, k]:.3f}' style='width:14px;height:14px;background:{_viridis(float(np.sqrt(m[q, k]))) if k <= q else '#eee'}'></td>"
                for k in range(t)
            )
            mark = "outline:2px solid #d55e00;" if q == self.query else ""
            rows.append(f"<tr style='{mark}'><th style='font-weight:normal;text-align:right;white-space:pre'>{_e(_show(self.tokens[q]))}</th>{cells}</tr>")
        row = m[self.query]
        best = int(np.argmax(row[: self.query + 1]))
        return (
            f"<div style='font:11px monospace'><div style='font:13px sans-serif'>layer {l}, head {h}: query {self.query} "
            f"{_e(json.dumps(self.tokens[self.query], ensure_ascii=False))} attends most to {best} "
            f"{_e(json.dumps(self.tokens[best], ensure_ascii=False))} ({row[best]:.3f}); shade: √probability</div>"
            f"<table style='border-collapse:collapse'><tr><th></th>{head}</tr>{''.join(rows)}</table></div>"
        )


class Neighbours:
    """Nearest tokens by cosine (``Model.neighbors``): ``embedding`` (and ``lm_head`` when it is not
    tied) as lists of (id, text, cosine); ``ids``/``tokens`` what was looked up."""

    def __init__(self, data: dict):
        self.ids: List[int] = data["ids"]
        self.tokens: List[str] = data["tokens"]
        row = lambda n: (int(n["id"]), n["text"], float(n["cosine"]))
        self.embedding = [row(n) for n in data["embedding"]]
        self.lm_head = None if data["lm_head"] is None else [row(n) for n in data["lm_head"]]

    def __repr__(self) -> str:
        near = ", ".join(f"{t!r} {c:.3f}" for _, t, c in self.embedding[:8])
        return f"Neighbours({self.tokens!r}: {near})"

    def _repr_html_(self) -> str:
        return _table(f"nearest to {self.tokens!r} in the embedding table", ["id", "token", "cosine"], [(i, repr(t), f"{c:.4f}") for i, t, c in self.embedding])


class Analogy:
    """Embedding arithmetic (``Model.analogy``): ``terms`` as (sign, word, token texts) and the
    nearest tokens to the sum as (id, text, cosine), the input words left out."""

    def __init__(self, expression: str, data: dict):
        self.expression = expression
        self.terms = [(float(t["sign"]), t["word"], t["tokens"]) for t in data["terms"]]
        self.neighbours = [(int(n["id"]), n["text"], float(n["cosine"])) for n in data["neighbours"]]

    def __repr__(self) -> str:
        near = ", ".join(f"{t!r} {c:.3f}" for _, t, c in self.neighbours[:8])
        return f"Analogy({self.expression!r}: {near})"

    def _repr_html_(self) -> str:
        return _table(f"nearest to {self.expression}", ["id", "token", "cosine"], [(i, repr(t), f"{c:.4f}") for i, t, c in self.neighbours])


def _table(title: str, head: List[str], rows: Sequence[Sequence]) -> str:
    th = "".join(f"<th style='text-align:left;padding:1px 8px'>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td style='padding:1px 8px;white-space:pre'>{_e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div style='font:12px monospace'><div style='font:13px sans-serif'>{_e(title)}</div><table>{'<tr>' + th + '</tr>'}{body}</table></div>"


def _svg_axes(w: int, h: int, x0: float, x1: float, y0: float, y1: float, pad: Tuple[int, int, int, int]):
    """Maps data to pixels inside padding (left, right, top, bottom) and draws the frame and ticks."""
    left, right, top, bottom = pad
    px = lambda x: left + (w - left - right) * (x - x0) / ((x1 - x0) or 1)
    py = lambda y: top + (h - top - bottom) * (1 - (y - y0) / ((y1 - y0) or 1))
    parts = [f"<rect x='{left}' y='{top}' width='{w - left - right}' height='{h - top - bottom}' fill='none' stroke='#999'/>"]
    for v in np.linspace(y0, y1, 5):
        parts.append(f"<line x1='{left}' x2='{w - right}' y1='{py(v):.1f}' y2='{py(v):.1f}' stroke='#eee'/>")
        parts.append(f"<text x='{left - 4}' y='{py(v) + 4:.1f}' text-anchor='end' font-size='10'>{v:.2f}</text>")
    return px, py, parts


class Similarity:
    """One word in context ``a`` against a word in each other context (``Model.similarity``):
    ``cosine`` is ``[n_others, 1 + n_layers]`` (the embedding, then each layer's output), centred
    when ``centred``; ``shown`` says which cosine it is."""

    def __init__(self, data: dict):
        self.a, self.a_word, self.a_position, self.a_token = data["a"], data["a_word"], int(data["a_position"]), data["a_token"]
        self.shown: str = data["shown"]
        self.centred: bool = bool(data["centred"])
        others = data["others"]
        self.others = [(o["b"], o["b_word"], int(o["b_position"])) for o in others]
        self.points: List[str] = [s["point"] for s in others[0]["similarity"]] if others else []
        self.cosine = np.asarray([[s["cosine"] for s in o["similarity"]] for o in others], dtype=np.float64)

    def __repr__(self) -> str:
        return f"Similarity({self.a_word!r} in {self.a!r} vs {len(self.others)} contexts; {self.shown}; last layer {np.round(self.cosine[:, -1], 3).tolist()})"

    def _repr_html_(self) -> str:
        w, h = 640, 300
        lo, hi = min(0.0, float(self.cosine.min(initial=0))), 1.0
        px, py, parts = _svg_axes(w, h, 0, len(self.points) - 1, lo, hi, (48, 12, 12, 40))
        for i, (b, word, _) in enumerate(self.others):
            c = _PALETTE[i % len(_PALETTE)]
            pts = " ".join(f"{px(j):.1f},{py(v):.1f}" for j, v in enumerate(self.cosine[i]))
            parts.append(f"<polyline points='{pts}' fill='none' stroke='{c}' stroke-width='2'/>")
            parts.append(f"<text x='60' y='{24 + 14 * i}' font-size='11' fill='{c}'>{_e(repr(self.a_word))} in {_e(repr(self.a))} vs {_e(repr(word))} in {_e(repr(b))}</text>")
        for j in range(0, len(self.points), max(1, len(self.points) // 10)):
            parts.append(f"<text x='{px(j):.1f}' y='{h - 24}' text-anchor='middle' font-size='10'>{_e(self.points[j])}</text>")
        parts.append(f"<text x='{w / 2}' y='{h - 6}' text-anchor='middle' font-size='11'>layer (embed = input) — {_e(self.shown)}</text>")
        return f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' style='font-family:sans-serif'>{''.join(parts)}</svg>"


class Patchscope:
    """A Patchscope (``Model.patchscope``): ``unpatched`` is what the target generates alone;
    ``results`` one dict per source layer (``source_layer``, ``target_layer``, ``text``,
    ``tokens``, ``generated_ids``) with the whole generation."""

    def __init__(self, data: dict):
        self.source, self.source_pos = data["source"], int(data["source_pos"])
        self.target, self.target_pos = data["target"], int(data["target_pos"])
        self.unpatched: dict = data["unpatched"]
        self.results: List[dict] = data["results"]

    def texts(self) -> Dict[int, str]:
        """Source layer -> the text generated with that layer's state patched in."""
        return {int(r["source_layer"]): r["text"] for r in self.results}

    def __repr__(self) -> str:
        lines = [f"Patchscope({self.source!r} position {self.source_pos} → target position {self.target_pos})", f"  unpatched  {self.unpatched['text'].strip()[:60]!r}"]
        lines += [f"  {r['source_layer']:>3} → {r['target_layer']:>3}  {r['text'].strip()[:60]!r}" for r in self.results]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [("unpatched", "", self.unpatched["text"])] + [(r["source_layer"], r["target_layer"], r["text"]) for r in self.results]
        return _table(f"Patchscope of {self.source!r} (position {self.source_pos})", ["source layer", "target layer", "generated"], rows)


class Neurons:
    """MLP neuron activations at one layer (``Model.neurons``): ``activations`` is
    ``[n_positions, d_mlp]`` (``blocks.{layer}.mlp_post``, the input of the down projection)."""

    def __init__(self, layer: int, activations: np.ndarray, tokens: List[str]):
        self.layer = layer
        self.activations = activations
        self.tokens = tokens

    def top(self, k: int = 5) -> List[List[Tuple[int, float]]]:
        """Per position, the ``k`` neurons with the largest activation: (neuron, activation)."""
        order = np.argsort(-self.activations, axis=1, kind="stable")[:, :k]
        return [[(int(n), float(self.activations[p, n])) for n in order[p]] for p in range(len(self.tokens))]

    def neuron(self, n: int) -> np.ndarray:
        """One neuron's activation at every position."""
        if not 0 <= n < self.activations.shape[1]:
            raise ValueError(f"neuron {n}: the layer has neurons 0..{self.activations.shape[1] - 1}")
        return self.activations[:, n]

    def __repr__(self) -> str:
        return f"Neurons(layer {self.layer}: {self.activations.shape[0]} positions × {self.activations.shape[1]} neurons)"

    def _repr_html_(self) -> str:
        rows = [(repr(t), "  ".join(f"{n}:{a:.2f}" for n, a in top)) for t, top in zip(self.tokens, self.top(5))]
        return _table(f"layer {self.layer}: strongest neurons per token (neuron:activation)", ["token", "top neurons"], rows)


class PCA:
    """Each prompt's representation projected on its first two principal components
    (``Model.pca``): ``coords`` is ``[n_prompts, 2]``, ``explained`` the fraction of variance of
    each component; ``groups`` the labels that colour the points. In a notebook: the CLI's own
    scatter plot (``scalpel pca --png``), labels kept apart, as an inline PNG."""

    def __init__(self, data: dict, prompts: List[str], groups: List[str], layer: int, engine=None, model_name: str = ""):
        self.prompts = prompts
        self.groups = groups
        self.layer = layer
        self.coords = np.asarray(data["coords"], dtype=np.float64)
        self.explained = np.asarray(data["explained"], dtype=np.float64)
        self.components = np.asarray(data["components"], dtype=np.float64)
        self._engine = engine
        self._model_name = model_name

    def __repr__(self) -> str:
        return f"PCA(blocks.{self.layer}.resid_post of {len(self.prompts)} prompts; PC1 {100 * self.explained[0]:.1f}%, PC2 {100 * self.explained[1]:.1f}%)"

    def png(self) -> bytes:
        """The scatter plot as PNG bytes (what ``scalpel pca --png`` writes)."""
        args = {
            "title": f"{self._model_name} — PCA of blocks.{self.layer}.resid_post",
            "x_title": f"PC1 ({100 * self.explained[0]:.1f}% of variance)",
            "y_title": f"PC2 ({100 * self.explained[1]:.1f}%)",
            "points": [[float(x), float(y)] for x, y in self.coords[:, :2]],
            "labels": self.prompts,
            "groups": self.groups,
        }
        return self._engine.picture("scatter", json.dumps(args))

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.png()).decode("ascii")
        return f"<img alt='{_e(repr(self))}' src='data:image/png;base64,{data}'/>"


class TopExamples:
    """The corpus contexts that most activate a neuron, a direction or a head's attention to a token
    (``Model.top_examples``), best first: each a dict with ``score``, ``document``, ``position``,
    ``token``, ``before``, ``after``, ``tokens`` and their ``scores``, and ``focus`` (the
    example's index in ``tokens``). ``probe`` says what was scored over ``documents`` documents."""

    def __init__(self, data: dict):
        self.probe: str = data["probe"]
        self.documents: int = int(data["documents"])
        self.examples: List[dict] = data["examples"]
        self._html: str = data["html"]

    def __repr__(self) -> str:
        lines = [f"TopExamples({self.probe}, {len(self.examples)} of {self.documents} documents)"]
        for e in self.examples[:10]:
            text = (e["before"][-30:] + "⟦" + e["token"] + "⟧" + e["after"][:30]).replace("\n", "\\n")
            lines.append(f"  {e['score']:>9.3f}  doc {e['document']:<4} …{text}…")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return self._html
