"""Type stubs of the Rust extension module (python/src/lib.rs). Use the ``scalpel`` package's
``Model``; these are its building blocks."""

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

__version__: str

# ("steer" | "ablate", {layer: direction}, scale, layers spec or None, source name, positions or None),
# or ("replace", {position: row}, 0.0, point name, "", None)
Edit = Tuple[str, Dict[int, List[float]], float, Optional[str], str, Optional[List[int]]]

class Engine:
    """A loaded model on one backend (the engine behind ``scalpel.Model``)."""

    def __init__(
        self, model: Optional[str] = None, device: str = "auto", weights: str = "stored", activations: str = "f32"
    ) -> None: ...
    def config_json(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def device(self) -> str: ...
    def encode(self, text: str, chat: bool = False) -> List[int]: ...
    def decode(self, ids: List[int]) -> str: ...
    def pieces(self, ids: List[int]) -> List[str]: ...
    def select_points(self, patterns: str) -> List[str]: ...
    def token(self, spec: str) -> Tuple[int, str]: ...
    def patch(
        self,
        clean: List[int],
        corrupted: List[int],
        metric: str,
        answer: int,
        wrong: Optional[int] = None,
        sites: List[str] = ...,
        head_position: Optional[int] = None,
    ) -> str: ...
    def attribute(self, ids: List[int], position: int, answer: int, wrong: Optional[int] = None) -> str: ...
    def picture(self, op: str, args: str) -> bytes: ...
    def param_names(self) -> List[Tuple[str, str, List[int]]]: ...
    def param(self, name: str) -> np.ndarray: ...
    def microscope(self, op: str, args: str) -> str:
        """Microscope operation ``op`` (lens, heads, layers, find_word, neighbors, analogy,
        similarity, patchscope, pca, steer_build, top_examples) with JSON arguments; answers JSON."""
        ...
    def run(
        self,
        ids: List[int],
        capture: List[str] = ...,
        hooks: List[Tuple[str, Callable[[np.ndarray, str], Optional[np.ndarray]]]] = ...,
        edits: List[Edit] = ...,
    ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]: ...
    def generate(
        self,
        prompt: str,
        max_tokens: int,
        temperature: float,
        top_k: Optional[int],
        top_p: Optional[float],
        min_p: Optional[float],
        repetition_penalty: Optional[float],
        seed: int,
        chat: bool,
        on_piece: Optional[Callable[[str], Optional[bool]]] = None,
        edits: List[Edit] = ...,
    ) -> str: ...

def read_control_vector(path: str) -> Tuple[Dict[int, np.ndarray], str]: ...
def write_control_vector(path: str, directions: Dict[int, List[float]], model_hint: str = "", force: bool = False) -> None: ...
