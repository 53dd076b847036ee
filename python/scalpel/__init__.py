"""scalpel: a CUDA-native LLM inference engine that is also a microscope for the model it runs.

The engine is Rust (the ``scalpel`` crate); this package drives it from Python with names that
TransformerLens users know::

    import scalpel
    model = scalpel.Model()                      # the default model (SmolLM2-135M-Instruct)
    print(model.generate("The capital of France is", max_tokens=8))
    logits, cache = model.run_with_cache("the apple is green")
    cache["blocks.3.resid_post"].shape           # (tokens, d_model)

Probe names are those of ``scalpel trace`` (the dump format in docs/DESIGN.md): ``embed``,
``blocks.{l}.{resid_pre,attn_probs,attn_z,head_out,attn_out,resid_mid,mlp_post,mlp_out,resid_post}``,
``final_norm``, ``logits``; patterns take ``*``.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _scalpel
from .microscope import PCA, Analogy, Attention, HeadScores, Lens, Neighbours, Neurons, Patchscope, Similarity, TopExamples
from .results import Attribution, PatchResult

__all__ = [
    "Model", "ActivationCache", "ControlVector", "Intervention", "PatchResult", "Attribution", "Lens", "Attention",
    "HeadScores", "Neighbours", "Analogy", "Similarity", "Patchscope", "Neurons", "PCA", "TopExamples", "__version__",
]
__version__: str = _scalpel.__version__

Hook = Callable[[np.ndarray, str], Optional[np.ndarray]]
Prompt = Union[str, Sequence[int], np.ndarray]


class ActivationCache(dict):
    """The probe points of one forward pass: probe name -> numpy array (float32).

    Shapes: residual-stream points (``embed``, ``resid_*``, ``attn_out``, ``mlp_out``,
    ``final_norm``) are ``[tokens, d_model]``; ``mlp_post`` is ``[tokens, d_mlp]``;
    ``attn_probs`` is ``[n_heads, tokens, tokens]`` (query, key); ``logits`` is
    ``[tokens, d_vocab]``. ``str_tokens`` holds the tokens as text.
    """

    def __init__(self, arrays: Dict[str, np.ndarray], n_layers: int, str_tokens: List[str]):
        super().__init__(arrays)
        self.n_layers = n_layers
        self.str_tokens = str_tokens

    def __missing__(self, name: str) -> np.ndarray:
        raise KeyError(
            f"{name!r} was not captured (captured: {', '.join(self) or 'nothing'}); "
            "pass names= to run_with_cache to choose what is kept"
        )

    def stack_activation(self, kind: str) -> np.ndarray:
        """``blocks.{l}.{kind}`` of every layer stacked: ``[n_layers, ...]``."""
        return np.stack([self[f"blocks.{l}.{kind}"] for l in range(self.n_layers)])

    def accumulated_resid(self) -> np.ndarray:
        """The residual stream before each layer and after the last: ``[n_layers + 1, tokens,
        d_model]`` (``resid_pre`` of layers 0..L-1, then ``resid_post`` of layer L-1), the
        rows the logit lens reads."""
        rows = [self[f"blocks.{l}.resid_pre"] for l in range(self.n_layers)]
        rows.append(self[f"blocks.{self.n_layers - 1}.resid_post"])
        return np.stack(rows)


class ControlVector:
    """Directions per layer, as llama.cpp's control vectors hold them: ``directions[l]`` is added
    to ``blocks.{l}.resid_post`` (0-based; llama.cpp's ``direction.l``). ``load``/``save`` read
    and write the GGUF files that ``scalpel steer build`` and llama.cpp use."""

    def __init__(self, directions: Dict[int, np.ndarray], model_hint: str = ""):
        if not directions:
            raise ValueError("a control vector needs at least one layer's direction")
        self.directions = {}
        for layer, v in directions.items():
            if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
                raise ValueError(f"layer {layer!r} is not a layer index")
            a = np.ascontiguousarray(v, dtype=np.float32)
            if a.ndim != 1 or not np.all(np.isfinite(a)):
                raise ValueError(f"the direction for layer {layer} must be a 1-D array of finite numbers")
            self.directions[int(layer)] = a
        self.model_hint = model_hint

    @classmethod
    def load(cls, path: str) -> "ControlVector":
        directions, hint = _scalpel.read_control_vector(str(path))
        return cls(directions, hint)

    def save(self, path: str, force: bool = False) -> None:
        """Writes the GGUF file; an existing file is kept unless ``force``."""
        _scalpel.write_control_vector(str(path), {l: v.tolist() for l, v in self.directions.items()}, self.model_hint, force)

    def __repr__(self) -> str:
        return f"ControlVector(layers={sorted(self.directions)}, width={len(next(iter(self.directions.values())))})"


class Intervention:
    """A steering vector added (``Model.steer``) or a direction ablated (``Model.ablate``), with
    the CLI's ``--steer`` / ``--ablate`` semantics. Pass it to a call (``interventions=[...]``)
    or use it as a context manager: every call on its model inside the ``with`` applies it."""

    def __init__(
        self, model: "Model", kind: str, vector: ControlVector, scale: float, layers: Optional[str], source: str,
        positions: Optional[List[int]] = None,
    ):
        self._model = model
        self._arg = (kind, {l: v.tolist() for l, v in vector.directions.items()}, float(scale), layers, source, positions)
        self.kind, self.vector, self.scale, self.layers, self.positions = kind, vector, scale, layers, positions

    def __enter__(self) -> "Intervention":
        self._model._active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        self._model._active.remove(self)

    def __repr__(self) -> str:
        if self.kind == "replace":
            return f"Intervention(replace {self.layers} at position {self.positions[0]})"
        at = "" if self.positions is None else f", positions={self.positions}"
        return f"Intervention({self.kind}, {self._arg[4]}, scale={self.scale}, layers={self.layers}{at})"


_DONE = object()


class Model:
    """A model loaded onto a device, with its tokenizer.

    ``model``: a .gguf file, a Hugging Face model directory or repo id, or a known name
    (``smollm2-135m``, the default when None; ``gemma3-270m``) — the CLI's ``--model``.
    ``device``: ``"auto"`` (a usable GPU, else the CPU; never the mock), ``"cpu"``, ``"cuda"``,
    or ``"mock"`` (the CUDA kernels run on the CPU, slowly: for checking, not for speed).
    ``weights``: ``"stored"`` keeps the file's format (the default), ``"f32"`` dequantizes on
    load. ``activations``: ``"f32"`` (exact) or ``"int8"`` (the CLI's ``--activations``; applies
    to the whole process).
    """

    def __init__(
        self,
        model: Optional[str] = None,
        device: str = "auto",
        *,
        weights: str = "stored",
        activations: str = "f32",
    ):
        for arg, value in (("model", model), ("device", device), ("weights", weights), ("activations", activations)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{arg} must be a string, not {type(value).__name__}")
        self._engine = _scalpel.Engine(model, device, weights, activations)
        self._active: List[Intervention] = []
        self.config: dict = json.loads(self._engine.config_json())
        c = self.config
        self.name: str = self._engine.label
        self.device: str = self._engine.device
        self.n_layers: int = c["n_layers"]
        self.d_model: int = c["hidden_size"]
        self.n_heads: int = c["n_heads"]
        self.n_kv_heads: int = c["n_kv_heads"]
        self.d_head: int = c["head_dim"]
        self.d_mlp: int = c["intermediate_size"]
        self.d_vocab: int = c["vocab_size"]
        self.n_ctx: int = c["context_length"]

    def __repr__(self) -> str:
        return f"scalpel.Model({self.name!r}, device={self.device!r}, n_layers={self.n_layers}, d_model={self.d_model})"

    # Tokens ------------------------------------------------------------------------------------

    def to_tokens(self, text: Union[str, Sequence[str]], chat: bool = False) -> Union[np.ndarray, List[np.ndarray]]:
        """Token ids (int64) of ``text``, with the BOS token where the model adds one; ``chat``
        wraps it in the model's chat template. A list of texts gives a list of arrays."""
        if isinstance(text, str):
            return np.asarray(self._engine.encode(text, chat), dtype=np.int64)
        if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
            return [self.to_tokens(t, chat) for t in text]
        raise TypeError(f"to_tokens takes a string or a list of strings, not {type(text).__name__}")

    def to_string(self, ids: Union[int, Sequence[int], np.ndarray]) -> str:
        """The text of token ids."""
        return self._engine.decode(self._ids(ids))

    def to_str_tokens(self, prompt: Prompt, chat: bool = False) -> List[str]:
        """Each token of a text (or of ids) as its own string."""
        return self._engine.pieces(self._prompt_ids(prompt, chat))

    def _ids(self, ids: Union[int, Sequence[int], np.ndarray]) -> List[int]:
        if isinstance(ids, (int, np.integer)):
            ids = [ids]
        a = np.asarray(ids)
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"token ids must be a 1-D sequence of integers, got an array of shape {a.shape} and type {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"token id {int(a.min())} is negative")
        return [int(i) for i in a]

    def _prompt_ids(self, prompt: Prompt, chat: bool = False) -> List[int]:
        if isinstance(prompt, str):
            return self._engine.encode(prompt, chat)
        ids = self._ids(prompt)
        if not ids:
            raise ValueError("the prompt has no tokens")
        return ids

    @staticmethod
    def _is_batch(prompt) -> bool:
        return isinstance(prompt, (list, tuple)) and len(prompt) > 0 and all(
            isinstance(p, (str, list, tuple, np.ndarray)) for p in prompt
        )

    # Interventions -----------------------------------------------------------------------------

    def steer(
        self,
        vector: Union[str, ControlVector, np.ndarray],
        scale: float = 1.0,
        layers: Union[None, int, str, Sequence[int]] = None,
        positions: Optional[Sequence[int]] = None,
    ) -> Intervention:
        """Adds ``scale`` × the vector to ``blocks.{l}.resid_post`` at every position (generated
        tokens included) or at ``positions`` (token indices from 0), for each layer it has (or
        ``layers``: ``12``, ``"10-14"``, ``[3, 5]``). ``vector``: a control-vector file, a
        ``ControlVector``, or one direction (then ``layers`` says where)."""
        cv, source = self._vector(vector, layers)
        return Intervention(self, "steer", cv, scale, _layer_spec(layers), source, _positions(positions))

    def ablate(
        self,
        vector: Union[str, ControlVector, np.ndarray],
        layers: Union[None, int, str, Sequence[int]] = None,
        positions: Optional[Sequence[int]] = None,
    ) -> Intervention:
        """Projects the direction out of the residual stream after every sublayer of every layer
        (or of ``layers``), at every position or at ``positions``; one direction serves every
        layer, a file of several gives each layer its own."""
        cv, source = self._vector(vector, None)
        return Intervention(self, "ablate", cv, 1.0, _layer_spec(layers), source, _positions(positions))

    def replace(self, name: str, position: int, value: np.ndarray) -> Intervention:
        """Replaces one row of a probe point — ``name`` (``"blocks.4.resid_post"``, any point but
        ``attn_probs``) at token ``position`` — with ``value`` (that point's row: ``[d_model]``
        for the residual stream, ``[d_mlp]`` for ``mlp_post``, ``[n_heads * d_head]`` for
        ``attn_z``), as a Patchscope transplants a state; the engine does it, no Python runs."""
        if not isinstance(name, str):
            raise TypeError(f"the point is named by a string, not {type(name).__name__}")
        (pos,) = _positions([position])
        row = np.ascontiguousarray(value, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(row)):
            raise ValueError("the replacement row holds NaN or infinity")
        return Intervention(self, "replace", ControlVector({pos: row}), 0.0, name, "", [pos])

    def _vector(self, vector, layers) -> Tuple[ControlVector, str]:
        if isinstance(vector, ControlVector):
            return vector, "the control vector"
        if isinstance(vector, (str, bytes)) or hasattr(vector, "__fspath__"):
            path = str(vector)
            return ControlVector.load(path), path
        a = np.asarray(vector, dtype=np.float32)
        if a.ndim != 1:
            raise ValueError(f"a direction must be 1-D ({self.d_model} values), got shape {a.shape}")
        if layers is None:
            at = list(range(self.n_layers))
        elif isinstance(layers, (int, np.integer)):
            at = [int(layers)]
        elif isinstance(layers, str):
            at = list(range(self.n_layers))  # the engine selects from the spec
        else:
            at = [int(l) for l in layers]
        bad = [l for l in at if not 0 <= l < self.n_layers]
        if bad:
            raise ValueError(f"layer {bad[0]} is outside the model's layers 0..{self.n_layers - 1}")
        return ControlVector({l: a for l in at}), "the direction"

    def _edits(self, interventions: Sequence[Intervention]) -> list:
        extra = list(interventions)
        for i in extra:
            if not isinstance(i, Intervention):
                raise TypeError(f"interventions must come from model.steer() or model.ablate(), not {type(i).__name__}")
            if i._model is not self:
                raise ValueError("an intervention made for another model")
        return [i._arg for i in self._active + extra]

    # Forward passes ----------------------------------------------------------------------------

    def __call__(self, prompt: Prompt, interventions: Sequence[Intervention] = ()) -> np.ndarray:
        """The logits ``[tokens, d_vocab]`` of one forward pass."""
        logits, _ = self._engine.run(self._prompt_ids(prompt), [], [], self._edits(interventions))
        return logits

    # Causal tools ------------------------------------------------------------------------------

    def token(self, token: Union[str, int]) -> int:
        """A token id from an id, ``"#id"``, or one token's text (a word is taken with its leading
        space when that is one token, as it follows a space in running text)."""
        if isinstance(token, (int, np.integer)):
            self._ids([token])
            return self._engine.token(f"#{int(token)}")[0]
        if not isinstance(token, str):
            raise TypeError(f"a token is an id or a string, not {type(token).__name__}")
        return self._engine.token(token)[0]

    def patch(
        self,
        clean: Prompt,
        corrupted: Prompt,
        answer: Union[str, int],
        wrong: Union[str, int, None] = None,
        metric: Optional[str] = None,
        sites: Sequence[str] = ("resid_pre", "attn_out", "mlp_out"),
        head_position: Optional[int] = None,
        chat: bool = False,
    ) -> PatchResult:
        """Activation patching, as ``scalpel patch``: the corrupted prompt runs with one piece of the
        clean run in place (``resid_pre``, ``attn_out``, ``mlp_out`` per layer and position;
        ``heads`` per layer and head, over every position or ``head_position``), measured at the
        last position by ``metric`` — ``"logit_diff"`` (the default with ``wrong``), ``"logit"``,
        ``"prob"`` or ``"logprob"`` (the default without) — normalized to corrupted 0, clean 1."""
        a, b = self._prompt_ids(clean, chat), self._prompt_ids(corrupted, chat)
        if len(a) != len(b):
            raise ValueError(
                f"the clean prompt has {len(a)} tokens and the corrupted one {len(b)}: patching pairs positions, so they must tokenize to the same length"
            )
        if isinstance(sites, str):
            sites = [sites]
        metric = metric or ("logit_diff" if wrong is not None else "logprob")
        answer_id = self.token(answer)
        wrong_id = None if wrong is None else self.token(wrong)
        if head_position is not None:
            head_position = head_position + len(a) if head_position < 0 else head_position
            if not 0 <= head_position < len(a):
                raise ValueError(f"head_position is outside the {len(a)} tokens")
        data = json.loads(self._engine.patch(a, b, metric, answer_id, wrong_id, list(sites), head_position))
        ans = repr(self.to_string(answer_id))
        name = f"logit({ans}) − logit({self.to_string(wrong_id)!r})" if wrong_id is not None else f"{metric}({ans})"
        return PatchResult(data, self._engine.pieces(a), self._engine.pieces(b), name, head_position)

    def attribute(
        self,
        prompt: Prompt,
        answer: Union[str, int, None] = None,
        wrong: Union[str, int, None] = None,
        position: int = -1,
        chat: bool = False,
    ) -> Attribution:
        """Direct logit attribution, as ``scalpel attribute``: the logit of ``answer`` (default: the
        model's top prediction) minus ``wrong``'s at ``position``, split into the embedding and each
        layer's attention (per head) and MLP, through the final norm with its scale frozen."""
        ids = self._prompt_ids(prompt, chat)
        pos = position + len(ids) if position < 0 else position
        if not 0 <= pos < len(ids):
            raise ValueError(f"position {position} is outside the {len(ids)} tokens")
        if answer is None:
            answer_id = int(np.argmax(self(ids[: pos + 1])[-1]))
        else:
            answer_id = self.token(answer)
        wrong_id = None if wrong is None else self.token(wrong)
        data = json.loads(self._engine.attribute(ids, pos, answer_id, wrong_id))
        ans = repr(self.to_string(answer_id))
        target = f"logit({ans}) − logit({self.to_string(wrong_id)!r})" if wrong_id is not None else f"logit({ans})"
        return Attribution(data, self._engine.pieces(ids), target)

    # Parameters --------------------------------------------------------------------------------

    def param_names(self) -> List[str]:
        """The parameters the forward pass reads, by Hugging Face name
        (``model.layers.3.self_attn.q_proj.weight``) whatever the file's format; ``param`` also
        takes the file's own names (``blk.3.attn_q.weight`` in a GGUF)."""
        return [name for name, _, _ in self._engine.param_names()]

    def param(self, name: str) -> np.ndarray:
        """One parameter as a float32 array (dequantized from the file's format, loaded on request),
        in Hugging Face's layout: matrices ``[out, in]``, norms ``[d]``, as the file stores their
        values (Gemma's GGUF norms hold llama.cpp's 1 + w)."""
        if not isinstance(name, str):
            raise TypeError(f"a parameter name is a string, not {type(name).__name__}")
        return self._engine.param(name)

    def named_parameters(self) -> Iterator[Tuple[str, np.ndarray]]:
        """(name, array) for every parameter, each loaded as it is reached."""
        for name in self.param_names():
            yield name, self.param(name)

    @property
    def W_E(self) -> np.ndarray:
        """The embedding table ``[d_vocab, d_model]`` (TransformerLens's name)."""
        return self.param("model.embed_tokens.weight")

    @property
    def W_U(self) -> np.ndarray:
        """The unembedding ``[d_model, d_vocab]`` (TransformerLens's name; the embedding's transpose
        when the model ties them)."""
        tied = "lm_head.weight" not in self.param_names()
        return (self.W_E if tied else self.param("lm_head.weight")).T

    # The microscope -----------------------------------------------------------------------------

    def _micro(self, op: str, **args) -> dict:
        return json.loads(self._engine.microscope(op, json.dumps(args)))

    def _layer(self, layer: int) -> int:
        """A layer index; negative counts from the end (-1 = the last layer)."""
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise TypeError(f"a layer is an integer, not {type(layer).__name__}")
        l = int(layer) + self.n_layers if layer < 0 else int(layer)
        if not 0 <= l < self.n_layers:
            raise ValueError(f"layer {layer} is outside the model's layers 0..{self.n_layers - 1} (or -{self.n_layers}..-1)")
        return l

    @staticmethod
    def _count(value, name: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")
        return int(value)

    def lens(self, prompt: Prompt, k: int = 5, chat: bool = False) -> Lens:
        """The logit lens, as ``scalpel lens``: each layer's ``resid_post`` through the final norm
        and the unembedding, the top ``k`` tokens at every position."""
        ids = self._prompt_ids(prompt, chat)
        return Lens(self._micro("lens", ids=ids, k=self._count(k, "k")), self._engine.pieces(ids))

    def attention(self, prompt: Prompt, chat: bool = False) -> Attention:
        """Every layer's attention probabilities from the engine's fused attention, with head
        rankings (``sinks``, ``find``, ``focused``), as ``scalpel attention`` and the report."""
        ids = self._prompt_ids(prompt, chat)
        _, arrays = self._engine.run(ids, ["blocks.*.attn_probs"], [], [])
        probs = np.stack([arrays[f"blocks.{l}.attn_probs"] for l in range(self.n_layers)])
        return Attention(self, ids, probs, self._engine.pieces(ids))

    def neighbors(self, token: Union[str, int], top: int = 10, include_special: bool = False) -> Neighbours:
        """The tokens nearest to a word's token (its word-initial form first; the mean of its
        pieces when it splits) or to a token id, by cosine in the embedding table (and the LM head
        when untied), as ``scalpel neighbors``. Special tokens are left out unless asked for."""
        top = self._count(top, "top")
        if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
            return Neighbours(self._micro("neighbors", token=None, id=self.token(token), top=top, include_special=bool(include_special)))
        if not isinstance(token, str) or not token:
            raise ValueError(f"token must be a non-empty string or an id, not {token!r}")
        return Neighbours(self._micro("neighbors", token=token, id=None, top=top, include_special=bool(include_special)))

    neighbours = neighbors

    def analogy(self, expression: str, top: int = 10, include_special: bool = False) -> Analogy:
        """Embedding arithmetic, as ``scalpel analogy``: ``"king - man + woman"``; the nearest
        tokens to the sum, the input words left out."""
        if not isinstance(expression, str):
            raise TypeError(f"the expression is a string, not {type(expression).__name__}")
        data = self._micro("analogy", expression=expression, top=self._count(top, "top"), include_special=bool(include_special))
        return Analogy(expression, data)

    def similarity(
        self,
        a: str,
        a_token: str,
        b: Union[str, Sequence[str]],
        b_token: Union[str, Sequence[str]],
        center: Union[bool, Sequence[str]] = False,
    ) -> Similarity:
        """One word's representation in context ``a`` against a word in context ``b`` (or each of
        several), at the embedding and after every layer, as ``scalpel similarity``. ``center``:
        True subtracts the mean residual over the contexts' tokens; a list of texts, the mean over
        theirs (raw cosines sit near 1 in later layers whatever the sense)."""
        bs = [b] if isinstance(b, str) else list(b)
        ws = [b_token] if isinstance(b_token, str) else list(b_token)
        if len(bs) != len(ws):
            raise ValueError(f"{len(bs)} contexts b but {len(ws)} words b_token")
        if not all(isinstance(x, str) for x in [a, a_token, *bs, *ws]):
            raise TypeError("contexts and words are strings")
        if not isinstance(center, bool):
            center = list(center)
            if not all(isinstance(t, str) for t in center):
                raise TypeError("center is a bool or a list of texts")
        return Similarity(self._micro("similarity", a=a, a_word=a_token, others=list(zip(bs, ws)), center=center))

    def build_steering(
        self,
        positive: Sequence[str],
        negative: Sequence[str],
        layers: Union[None, int, str, Sequence[int]] = None,
        method: str = "mean",
        point: str = "resid_post",
        chat: bool = False,
    ) -> ControlVector:
        """A steering vector from contrasting prompts, as ``scalpel steer build``: per layer the
        mean last-token representation of ``positive`` minus ``negative`` (``method="mean"``) or
        the first principal component of the paired differences (``"pca"``), at ``resid_post`` (or
        ``resid_pre``). ``layers`` as the CLI's (default: every layer but 0). Save it with
        ``.save(path)`` to use it in llama.cpp or ``scalpel --steer``."""
        for name, group in (("positive", positive), ("negative", negative)):
            if isinstance(group, str) or not all(isinstance(p, str) for p in group):
                raise TypeError(f"{name} is a list of prompt strings")
        if layers is None:
            at = list(range(1, self.n_layers))
        elif isinstance(layers, str):
            at = self._micro("layers", spec=layers)
        elif isinstance(layers, (int, np.integer)):
            at = [self._layer(layers)]
        else:
            at = [self._layer(l) for l in layers]
        encode = lambda ps: [self._engine.encode(p, chat) for p in ps]
        data = self._micro("steer_build", positive=encode(positive), negative=encode(negative), layers=at, point=point, method=method)
        return ControlVector({int(l): np.asarray(v, dtype=np.float32) for l, v in data["directions"].items()}, data["model_hint"])

    def patchscope(
        self,
        source: str,
        source_layer: Optional[int] = None,
        source_pos: int = -1,
        target: Optional[str] = None,
        placeholder: str = "?",
        target_layer: Optional[int] = None,
        max_tokens: int = 12,
        sweep: bool = False,
    ) -> Patchscope:
        """A Patchscope, as ``scalpel patchscope``: the source's ``resid_post`` at (``source_layer``,
        ``source_pos``) replaces the target's at the placeholder's last position, then greedy
        generation says what it holds. ``target`` defaults to the CLI's identity prompt
        (``"cat -> cat\\n1135 -> 1135\\nhello -> hello\\n?"``); ``sweep`` runs
        every source layer (target layer = source layer unless given). The unpatched target's own
        generation comes with it as the baseline."""
        if not isinstance(source, str) or not source:
            raise ValueError("source must be a non-empty string")
        if sweep:
            layers = list(range(self.n_layers))
        else:
            layers = [self.n_layers // 2 if source_layer is None else self._layer(source_layer)]
        tl = None if target_layer is None else self._layer(target_layer)
        data = self._micro(
            "patchscope", source=source, source_pos=int(source_pos), target=target, placeholder=placeholder,
            source_layers=layers, target_layer=tl, max_tokens=self._count(max_tokens, "max_tokens", 0),
        )
        return Patchscope(data)

    def neurons(self, prompt: Prompt, layer: int, chat: bool = False) -> Neurons:
        """MLP neuron activations of one layer (``blocks.{layer}.mlp_post``), as ``scalpel neurons``."""
        layer = self._layer(layer)
        ids = self._prompt_ids(prompt, chat)
        _, arrays = self._engine.run(ids, [f"blocks.{layer}.mlp_post"], [], [])
        return Neurons(layer, arrays[f"blocks.{layer}.mlp_post"], self._engine.pieces(ids))

    def pca(self, prompts: Sequence[str], layer: int, position: int = -1, groups: Optional[Sequence[str]] = None) -> PCA:
        """Each prompt's ``blocks.{layer}.resid_post`` at ``position`` on its first two principal
        components, as ``scalpel pca``; ``groups`` (one label per prompt) colour the points."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts is a list of strings")
        prompts = list(prompts)
        groups = [""] * len(prompts) if groups is None else [str(g) for g in groups]
        if len(groups) != len(prompts):
            raise ValueError(f"{len(groups)} groups for {len(prompts)} prompts")
        layer = self._layer(layer)
        data = self._micro("pca", prompts=[self._engine.encode(p, False) for p in prompts], layer=layer, position=int(position))
        return PCA(data, prompts, groups, layer, self._engine, self.name)

    def top_examples(
        self,
        corpus: Union[str, "os.PathLike[str]", Sequence[str]],
        layer: Optional[int] = None,
        neuron: Optional[int] = None,
        direction: Union[None, str, ControlVector, np.ndarray] = None,
        head: Optional[int] = None,
        key: Union[None, str, int] = None,
        top: int = 10,
        window: int = 128,
        context: int = 10,
        include_first: bool = False,
        max_documents: Optional[int] = None,
    ) -> TopExamples:
        """The contexts of a corpus that most activate one thing, as ``scalpel top-examples``: a
        neuron (``layer``, ``neuron``: ``blocks.{layer}.mlp_post``), a direction (``direction``: a
        control-vector file, a ``ControlVector`` — ``layer`` picks one of its layers — or one
        vector with ``layer``; projected on ``blocks.{layer}.resid_post`` at unit length), or a
        head's attention to a token (``layer``, ``head``, ``key``). ``corpus``: a .txt file
        (documents separated by blank lines), a .jsonl file (``{"text": ...}`` per line), or a
        list of documents. Ctrl-C stops the scan between documents."""
        args: dict = dict(
            layer=None if layer is None else self._layer(layer), neuron=None, directions=None, direction_name=None,
            head=None, key=None, top=self._count(top, "top"), window=self._count(window, "window", 2),
            context=self._count(context, "context", 0), include_first=bool(include_first),
            max_documents=None if max_documents is None else self._count(max_documents, "max_documents"),
        )
        if isinstance(corpus, (str, bytes)) or hasattr(corpus, "__fspath__"):
            args.update(corpus=os.fspath(corpus), documents=None)
        else:
            docs = list(corpus)
            if not all(isinstance(d, str) for d in docs):
                raise TypeError("corpus is a file path or a list of document strings")
            args.update(corpus=None, documents=docs)
        chosen = [x is not None for x in (neuron, direction, head)]
        if sum(chosen) != 1:
            raise ValueError("choose one of neuron=, direction=, head=")
        if neuron is not None:
            args["neuron"] = self._count(neuron, "neuron", 0)
        elif head is not None:
            if key is None:
                raise ValueError("head= needs key= (the attended-to token: its text, '#id' or an id)")
            args.update(head=self._count(head, "head", 0), key=f"#{int(key)}" if isinstance(key, (int, np.integer)) else key)
        else:
            is_file = isinstance(direction, (str, bytes)) or hasattr(direction, "__fspath__")
            if layer is None and not (is_file or isinstance(direction, ControlVector)):
                raise ValueError("a direction given as a vector needs layer=")
            cv, name = self._vector(direction, args["layer"])
            args.update(directions={l: v.tolist() for l, v in cv.directions.items()}, direction_name=name)
        return TopExamples(self._micro("top_examples", **args))

    def run_with_cache(
        self,
        prompt: Union[Prompt, Sequence[Prompt]],
        names: Union[None, str, Sequence[str], Callable[[str], bool]] = None,
        interventions: Sequence[Intervention] = (),
    ):
        """One forward pass keeping the activations: ``(logits, cache)``.

        ``names``: None keeps every probe point; a name or pattern (``"blocks.*.resid_post"``),
        a list of them, or a function of the name (TransformerLens's ``names_filter``). A list
        of prompts returns a list of ``(logits, cache)``, one per prompt.
        """
        if self._is_batch(prompt):
            return [self.run_with_cache(p, names, interventions) for p in prompt]
        ids = self._prompt_ids(prompt)
        if names is None:
            patterns = ["*"]
        elif isinstance(names, str):
            patterns = [names]
        elif callable(names):
            patterns = [n for n in self._engine.select_points("*") if names(n)]
        else:
            patterns = list(names)
            if not all(isinstance(n, str) for n in patterns):
                raise TypeError("names must be strings (probe names or patterns)")
        logits, arrays = self._engine.run(ids, patterns, [], self._edits(interventions))
        return logits, ActivationCache(arrays, self.n_layers, self._engine.pieces(ids))

    def run_with_hooks(
        self, prompt: Prompt, hooks: Iterable[Tuple[str, Hook]] = (), interventions: Sequence[Intervention] = ()
    ) -> np.ndarray:
        """One forward pass with Python functions at probe points: returns the logits.

        Each hook is ``(name_or_pattern, fn)``; ``fn(activation, name)`` receives the values at
        that point as a writable float32 array and returns a replacement of the same shape, or
        None to keep the array it was given (changed in place or not). ``attn_probs`` can be
        read, not changed. Works on every device (the values are copied to and from it).
        """
        wrapped = []
        for item in hooks:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise TypeError("hooks must be (name_or_pattern, function) pairs")
            pattern, fn = item
            if not callable(fn):
                raise TypeError(f"the hook for {pattern!r} is not callable")
            wrapped.append((pattern, _as_float32(fn)))
        logits, _ = self._engine.run(self._prompt_ids(prompt), [], wrapped, self._edits(interventions))
        return logits

    # Generation --------------------------------------------------------------------------------

    def generate(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        min_p: Optional[float] = None,
        repetition_penalty: Optional[float] = None,
        seed: int = 0,
        chat: bool = False,
        stream: bool = False,
        interventions: Sequence[Intervention] = (),
    ) -> Union[str, Iterator[str]]:
        """A continuation of ``prompt``, as ``scalpel generate`` makes it (the same tokens for the
        same arguments and seed; greedy at temperature 0). ``stream=True`` returns an iterator
        of text pieces as they are decoded. Ctrl-C (KeyboardInterrupt) stops it cleanly."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, not {type(prompt).__name__}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
            raise ValueError(f"max_tokens must be a non-negative integer, got {max_tokens!r}")
        args = (prompt, max_tokens, float(temperature), top_k, top_p, min_p, repetition_penalty, seed, chat)
        edits = self._edits(interventions)
        if stream:
            return self._stream(args, edits)
        return json.loads(self._engine.generate(*args, edits=edits))["text"]

    def _stream(self, args, edits) -> Iterator[str]:
        pieces: "queue.Queue[object]" = queue.Queue()
        stop = threading.Event()
        outcome: dict = {}

        def on_piece(piece: str) -> bool:
            pieces.put(piece)
            return not stop.is_set()

        def work() -> None:
            try:
                outcome["result"] = self._engine.generate(*args, on_piece=on_piece, edits=edits)
            except BaseException as e:  # handed to the consumer below
                outcome["error"] = e
            finally:
                pieces.put(_DONE)

        worker = threading.Thread(target=work, name="scalpel-generate", daemon=True)
        worker.start()
        try:
            while True:
                item = pieces.get()
                if item is _DONE:
                    break
                yield item
        finally:
            # Stopped early (break, Ctrl-C): the engine ends after its current token.
            stop.set()
            worker.join()
        if "error" in outcome:
            raise outcome["error"]


def _layer_spec(layers) -> Optional[str]:
    """Layers as the CLI writes them (``12``, ``10-14``, ``3,5``)."""
    if layers is None:
        return None
    if isinstance(layers, str):
        return layers
    if isinstance(layers, (int, np.integer)):
        return str(int(layers))
    return ",".join(str(int(l)) for l in layers)


def _positions(positions) -> Optional[List[int]]:
    """Token positions (absolute, from 0), or None for all."""
    if positions is None:
        return None
    if isinstance(positions, (int, np.integer)):
        positions = [positions]
    out = []
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0:
            raise ValueError(f"positions are token indices from 0, got {p!r}")
        out.append(int(p))
    return out


def _as_float32(fn: Hook) -> Hook:
    def hook(activation: np.ndarray, name: str) -> Optional[np.ndarray]:
        out = fn(activation, name)
        if out is None:
            return None
        return np.ascontiguousarray(out, dtype=np.float32)

    return hook
