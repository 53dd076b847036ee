"""The Python package against the engine itself: the CLI's own outputs (``scalpel trace`` dumps,
``scalpel generate --json``) on the default model, hooks and their errors, and the exceptions of
bad input. Run by scripts/test_python.sh (the README's test command)."""

import json
import os
import signal
import subprocess
import threading

import numpy as np
import pytest

import scalpel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.environ.get("SCALPEL_CLI", os.path.join(ROOT, "target", "release", "scalpel"))
PROMPT = "the apple is green. what color is the apple?"


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module")
def model():
    return on("cpu")


_models = {}


def on(device):
    """The default model on `device`, loaded once per test session ("mock": the CUDA backend with
    its kernels run on the CPU — the same code a GPU runs, slowly)."""
    if device not in _models:
        _models[device] = scalpel.Model(device=device)
    return _models[device]


def cli(*args):
    if not os.path.exists(CLI):
        pytest.fail(f"{CLI} is missing: scripts/test_python.sh builds it (SCALPEL_CLI names another)")
    out = subprocess.run([CLI, *args, "--quiet"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def read_safetensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": np.float32, "I64": np.int64}[t["dtype"]]
        lo, hi = t["data_offsets"]
        out[name] = np.frombuffer(body[lo:hi], dtype=dtype).reshape(t["shape"])
    return out, header.get("__metadata__", {})


def test_config_and_tokens(model):
    assert model.n_layers == model.config["n_layers"] == 30
    assert (model.d_model, model.n_heads, model.d_vocab) == (576, 9, 49152)
    ids = model.to_tokens(PROMPT)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert model.to_string(ids) == PROMPT
    pieces = model.to_str_tokens(PROMPT)
    assert len(pieces) == len(ids) and "".join(pieces) == PROMPT
    assert model.to_str_tokens(ids) == pieces
    assert [list(t) for t in model.to_tokens(["a b", "c"])] == [list(model.to_tokens("a b")), list(model.to_tokens("c"))]


@pytest.mark.parametrize("device", ["cpu", "mock"])
def test_run_with_cache_equals_the_trace_dump(device, tmp_path):
    """The same forward pass as `scalpel trace`: every point bit for bit (same engine, same
    device, same order of operations) — on the CPU and on the CUDA backend (mock device)."""
    model = on(device)
    points = "embed,blocks.*.resid_post,blocks.3.attn_probs,blocks.7.mlp_post,final_norm,logits"
    out = tmp_path / "t.safetensors"
    cli("trace", "-p", PROMPT, "-o", str(out), "--points", points, "--device", device)
    dump, meta = read_safetensors(out)
    logits, cache = model.run_with_cache(PROMPT, names=points.split(","))
    assert sorted(cache) == sorted(n for n in dump if n != "tokens")
    for name, arr in cache.items():
        assert arr.shape == dump[name].shape, name
        assert np.array_equal(arr, dump[name]), f"{name}: relative difference {rel(arr, dump[name])}"
    assert np.array_equal(logits, dump["logits"])
    assert cache.str_tokens == json.loads(meta["token_strs"])
    assert cache["blocks.3.attn_probs"].shape == (model.n_heads, len(cache.str_tokens), len(cache.str_tokens))


def test_cache_names_patterns_and_stacks(model):
    _, everything = model.run_with_cache("hello world")
    assert len(everything) == 3 + 9 * model.n_layers
    t = everything["embed"].shape[0]
    assert everything["blocks.0.attn_z"].shape == (t, model.n_heads, model.d_head)
    assert everything["blocks.0.head_out"].shape == (t, model.n_heads, model.d_model)
    np.testing.assert_allclose(everything["blocks.0.head_out"].sum(axis=1), everything["blocks.0.attn_out"], atol=1e-4)
    _, some = model.run_with_cache("hello world", names=lambda n: n.endswith("resid_pre") or n.endswith("resid_post"))
    stack = some.stack_activation("resid_post")
    assert stack.shape == (model.n_layers, 3, model.d_model) or stack.shape[0] == model.n_layers
    acc = some.accumulated_resid()
    assert acc.shape[0] == model.n_layers + 1
    assert np.array_equal(acc[-1], some[f"blocks.{model.n_layers - 1}.resid_post"])
    assert np.array_equal(acc[1], some["blocks.0.resid_post"]) or rel(acc[1], some["blocks.0.resid_post"]) < 1e-6
    with pytest.raises(KeyError, match="not captured"):
        some["blocks.0.attn_out"]
    batch = model.run_with_cache(["hello world", "the apple"], names="logits")
    assert len(batch) == 2 and np.array_equal(batch[0][0], model("hello world"))


def test_hooks_edit_and_observe(model):
    """A hook that zeroes a layer's attention output equals the same edit done by hand: run to
    that point, then check the next residual is resid_mid = resid_pre. A hook returning None
    leaves the pass unchanged; in-place changes count."""
    base = model("the apple is green")
    seen = []
    same = model.run_with_hooks("the apple is green", [("blocks.*.attn_probs", lambda a, n: seen.append((n, a.shape)))])
    assert np.array_equal(same, base)
    assert len(seen) == model.n_layers and seen[0][0] == "blocks.0.attn_probs"

    def zero(a, name):
        a[:] = 0.0

    edited = model.run_with_hooks("the apple is green", [("blocks.5.attn_out", zero)])
    assert not np.array_equal(edited, base)
    mids = {}
    model.run_with_hooks(
        "the apple is green",
        [
            ("blocks.5.attn_out", lambda a, n: np.zeros_like(a)),
            ("blocks.5.resid_pre", lambda a, n: mids.__setitem__("pre", a.copy())),
            ("blocks.5.resid_mid", lambda a, n: mids.__setitem__("mid", a.copy())),
        ],
    )
    assert np.array_equal(mids["pre"], mids["mid"])
    # Doubling the final norm's output doubles the logits (the LM head is linear).
    doubled = model.run_with_hooks("the apple is green", [("final_norm", lambda a, n: a * 2)])
    assert rel(doubled, 2 * base) < 1e-5


def test_hook_errors_reach_python(model):
    class Boom(Exception):
        pass

    def boom(a, n):
        raise Boom(n)

    with pytest.raises(Boom, match="blocks.2.resid_post"):
        model.run_with_hooks("hello", [("blocks.2.resid_post", boom)])
    with pytest.raises(ValueError, match="shape"):
        model.run_with_hooks("hello world", [("embed", lambda a, n: a[:1])])
    with pytest.raises(ValueError, match="not changed|observed"):
        model.run_with_hooks("hello", [("blocks.0.attn_probs", lambda a, n: a * 0)])
    with pytest.raises(ValueError, match="matches no point"):
        model.run_with_hooks("hello", [("blocks.*.resid", lambda a, n: None)])
    with pytest.raises(TypeError):
        model.run_with_hooks("hello", [("embed", 3)])
    # The model still works after every failure.
    assert model("hello").shape[0] == len(model.to_tokens("hello"))


def test_generate_matches_the_cli(model):
    for extra in ([], ["-t", "0.8", "--top-p", "0.9", "--seed", "3"]):
        out = json.loads(cli("generate", "-p", "The capital of France is", "-n", "12", "--device", "cpu", "--json", *extra))
        kw = dict(temperature=0.8, top_p=0.9, seed=3) if extra else {}
        text = model.generate("The capital of France is", max_tokens=12, **kw)
        assert text == out["text"]
        streamed = "".join(model.generate("The capital of France is", max_tokens=12, stream=True, **kw))
        assert streamed == text


def test_stream_stops_when_abandoned(model):
    it = model.generate("Once upon a time", max_tokens=200, stream=True)
    first = next(it)
    it.close()  # the worker thread ends after its current token
    assert isinstance(first, str)
    assert threading.active_count() < 5


def test_keyboard_interrupt_stops_generation(model):
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            model.generate("Once upon a time", max_tokens=100000 if False else 4000)
    finally:
        timer.cancel()
    assert model.generate("The capital of France is", max_tokens=2)


def test_bad_arguments_raise_python_errors(model):
    with pytest.raises(FileNotFoundError):
        scalpel.Model("/nonexistent/model.gguf", device="cpu")
    with pytest.raises(ValueError, match="device"):
        scalpel.Model(device="tpu")
    with pytest.raises(TypeError):
        scalpel.Model(device=3)
    with pytest.raises(ValueError, match="top.p"):
        model.generate("hi", top_p=1.5, temperature=1.0)
    with pytest.raises(ValueError, match="max_tokens"):
        model.generate("hi", max_tokens=-1)
    with pytest.raises(ValueError, match="vocabulary"):
        model([1, 2, 10**6])
    with pytest.raises(ValueError, match="empty"):
        model.to_tokens("") if len(model.to_tokens("")) else model("")
    with pytest.raises(ValueError, match="context"):
        model(list(range(1, 10)) * 1000)


def test_mock_device_runs_the_same_pass():
    """The CUDA backend on the mock device (the kernels on the CPU): the same points as the CPU
    within the CUDA backend's bf16 tolerance (tests/cuda_model.rs)."""
    mock = scalpel.Model(device="mock")
    assert mock.device == "mock"
    cpu = scalpel.Model(device="cpu")
    lm, cm = mock.run_with_cache("the apple is green", names="blocks.*.resid_post")
    lc, cc = cpu.run_with_cache("the apple is green", names="blocks.*.resid_post")
    for name in cc:
        for r, (a, b) in enumerate(zip(cm[name], cc[name])):
            assert rel(a, b) < 5e-2, (name, r, rel(a, b))
    assert rel(lm, lc) < 5e-2
    got = mock.run_with_hooks("the apple is green", [("final_norm", lambda a, n: a * 2)])
    assert rel(got, 2 * lm) < 1e-2


def test_steering_and_ablation(model, tmp_path):
    """model.steer/model.ablate do what --steer/--ablate do: a steered pass equals the same
    addition made by a hook; the context manager applies to every call inside it and to nothing
    after; control-vector files round-trip and drive the CLI to the same text; an ablated
    direction is gone from every layer's residual."""
    prompt = "The movie was"
    base = model(prompt)
    rng = np.random.default_rng(7)
    v = rng.standard_normal(model.d_model).astype(np.float32)
    steered = model(prompt, interventions=[model.steer(v, 2.0, layers=5)])
    by_hook = model.run_with_hooks(prompt, [("blocks.5.resid_post", lambda a, n: a + 2.0 * v)])
    assert rel(steered, by_hook) < 1e-6 and rel(steered, base) > 1e-3
    with model.steer(v, 2.0, layers=5):
        assert np.array_equal(model(prompt), steered)
        _, cache = model.run_with_cache(prompt, names="logits")
        assert np.array_equal(cache["logits"], steered)
    assert np.array_equal(model(prompt), base)

    path = tmp_path / "v.gguf"
    cv = scalpel.ControlVector({5: v, 9: -v}, model_hint="smollm2")
    cv.save(str(path))
    back = scalpel.ControlVector.load(str(path))
    assert sorted(back.directions) == [5, 9] and np.array_equal(back.directions[9], -v)
    with pytest.raises(Exception, match="exist"):
        cv.save(str(path))
    want = json.loads(cli("generate", "-p", prompt, "-n", "8", "--device", "cpu", "--json", "--steer", f"{path}:0.5@5"))
    got = model.generate(prompt, max_tokens=8, interventions=[model.steer(str(path), 0.5, layers="5")])
    assert got == want["text"]

    u = v / np.linalg.norm(v)
    _, cache = model.run_with_cache(prompt, names="blocks.*.resid_post", interventions=[model.ablate(u)])
    for name, rows in cache.items():
        proj = np.abs(rows @ u).max()
        assert proj <= 1e-4 * np.abs(rows).max() * np.sqrt(model.d_model), (name, proj)

    with pytest.raises(ValueError, match="layer"):
        model.steer(v, 1.0, layers=99)
    with pytest.raises(ValueError, match="hidden size"):
        model(prompt, interventions=[model.steer(np.ones(7, np.float32), 1.0, layers=3)])
    with pytest.raises(FileNotFoundError):
        model.steer(str(tmp_path / "missing.gguf"))


def test_patch_matches_the_cli_and_renders(model):
    args = dict(clean="The Eiffel Tower is in the city of", corrupted="The Colosseum is in the city of", answer="Paris", wrong="Rome")
    r = model.patch(**args, sites=["resid_pre", "heads"])
    want = json.loads(cli("patch", "--clean", args["clean"], "--corrupted", args["corrupted"], "--answer", "Paris",
                          "--wrong", "Rome", "--sites", "resid_pre,heads", "--json", "--device", "cpu"))
    for site in ("resid_pre", "heads"):
        np.testing.assert_array_equal(r.normalized[site], np.asarray(want["sites"][site]["normalized"], np.float32))
    assert r.normalized["resid_pre"].shape == (model.n_layers, len(model.to_str_tokens(args["clean"])))
    assert r.normalized["heads"].shape == (model.n_layers, model.n_heads)
    assert r.clean > r.corrupted and (r.normalized["resid_pre"][:, 0] == 0).all()
    page = r._repr_html_()
    assert page.count("<td") == r.normalized["resid_pre"].size + r.normalized["heads"].size and "<script" not in page
    with pytest.raises(ValueError, match="same length"):
        model.patch("The Eiffel Tower is in", "Rome is in", answer="Paris")
    with pytest.raises(ValueError, match="wrong"):
        model.patch(args["clean"], args["corrupted"], answer="Paris", metric="logit_diff")
    with pytest.raises(ValueError, match="site"):
        model.patch(args["clean"], args["corrupted"], answer="Paris", sites=["mlp"])


def test_attribute_sums_and_renders(model):
    a = model.attribute("The Eiffel Tower is in the city of", answer="Paris", wrong="Rome")
    assert a.attn.shape == a.mlp.shape == (model.n_layers,) and a.heads.shape == (model.n_layers, model.n_heads)
    assert abs(a.total() - a.direct) < 1e-3 and abs(a.direct - a.logit) < 1e-3
    np.testing.assert_allclose(a.heads.sum(axis=1), a.attn, atol=1e-4)
    want = json.loads(cli("attribute", "-p", "The Eiffel Tower is in the city of", "--answer", "Paris", "--wrong", "Rome",
                          "--json", "--device", "cpu"))
    assert a.direct == pytest.approx(want["direct"], abs=1e-6)
    assert len(a.top_heads(3)) == 3 and "<table" in a._repr_html_()
    top = model.attribute("The capital of France is")
    assert "Paris" in top.target
    with pytest.raises(ValueError, match="not one token"):
        model.attribute("The capital of France is", answer="Parisxyzzy")


@pytest.mark.parametrize("device", ["cpu", "mock"])
def test_lens_matches_the_cli(device):
    model = on(device)
    prompt = "The capital of France is"
    lens = model.lens(prompt, k=5)
    want = json.loads(cli("lens", "-p", prompt, "--json", "--device", device))
    assert lens.top_ids.shape == (model.n_layers, len(lens.tokens), 5)
    for layer in want["layers"]:
        for p in layer["positions"]:
            assert lens.top_ids[layer["layer"], p["position"]].tolist() == [c["id"] for c in p["top"]]
            np.testing.assert_allclose(lens.top_probs[layer["layer"], p["position"]], [c["prob"] for c in p["top"]], rtol=1e-6)
    assert lens.at(-1)[0][0] == " Paris" and lens.top_tokens[-1][-1][0] == " Paris"
    page = lens._repr_html_()
    assert page.count("<tr>") == model.n_layers + 1 and "<script" not in page


def test_attention_maps_and_head_rankings(model):
    att = model.attention(PROMPT)
    _, cache = model.run_with_cache(PROMPT, names="blocks.*.attn_probs")
    assert att.probs.shape == (model.n_layers, model.n_heads, 11, 11)
    assert np.array_equal(att.probs[22], cache["blocks.22.attn_probs"])
    sinks = att.sinks(3)
    want = json.loads(cli("attention", "-p", PROMPT, "--sinks", "--top", "3", "--json", "--device", "cpu"))
    assert [(l, h) for l, h, _ in sinks] == [(x["layer"], x["head"]) for x in want["heads"]]
    found = att.find("apple", "green", 3)
    want = json.loads(cli("attention", "-p", PROMPT, "--find", "--query", "apple", "--key", "green", "--top", "3", "--json", "--device", "cpu"))
    assert [(l, h) for l, h, _ in found] == [(x["layer"], x["head"]) for x in want["heads"]]
    assert found[0][2] == pytest.approx(float(att.probs[found[0][0], found[0][1], 9, 3]), abs=1e-6)
    l, h, _ = att.focused(1)[0]
    assert f"layer {l}, head {h}: query 10" in att._repr_html_()
    assert "layer 22, head 7: query 9" in att.show(22, 7, 9)._repr_html_()
    with pytest.raises(ValueError, match="not among the tokens"):
        att.find("apple", "banana")
    with pytest.raises(ValueError, match="before"):
        att.find("the", "?")


def test_embedding_neighbours_and_analogy_match_the_cli(model):
    n = model.neighbors("apple", top=5)
    assert n.tokens == [" apple"] and len(n.embedding) == 5 and n.lm_head is None
    want = json.loads(cli("neighbors", "--token", "apple", "--top", "5", "--json", "--device", "cpu"))
    assert [i for i, _, _ in n.embedding] == [x["id"] for x in want["embedding"]]
    a = model.analogy("king - man + woman", top=5)
    assert a.neighbours[0][1] == " queen" and [t[1] for t in a.terms] == ["king", "man", "woman"]
    assert "queen" in a._repr_html_() and "queen" in repr(a)
    with pytest.raises(ValueError, match="vocabulary"):
        model.neighbors(10**7)
    with pytest.raises(ValueError, match="top"):
        model.analogy("king - man", top=0)


def test_similarity_matches_the_cli(model):
    s = model.similarity("I ate a crisp apple", "apple", ["Apple released a phone", "She peeled a banana"], ["Apple", "banana"], center=True)
    want = json.loads(cli("similarity", "--a", "I ate a crisp apple", "--a-token", "apple", "--b", "Apple released a phone",
                          "--b-token", "Apple", "--b", "She peeled a banana", "--b-token", "banana", "--center", "--json", "--device", "cpu"))
    assert s.centred and s.cosine.shape == (2, model.n_layers + 1) and s.points[0] == "embed"
    for row, comp in zip(s.cosine, want["comparisons"]):
        np.testing.assert_allclose(row, [x["cosine"] for x in comp["similarity"]], rtol=1e-9)
    raw = model.similarity("I ate a crisp apple", "apple", "Apple released a phone", "Apple")
    assert not raw.centred and raw.cosine[0, -1] > s.cosine[0, -1]
    assert raw._repr_html_().startswith("<svg") and "<script" not in raw._repr_html_()
    with pytest.raises(ValueError, match="not among the tokens"):
        model.similarity("I ate an apple", "pear", "x y", "x")


def test_steering_build_matches_the_cli(model, tmp_path):
    pos, neg = ["I love this, it makes me so happy!", "What a wonderful day."], ["I hate this, it makes me so sad.", "What a terrible day."]
    cv = model.build_steering(pos, neg, layers="10-11")
    (tmp_path / "p.txt").write_text("\n".join(pos) + "\n")
    (tmp_path / "n.txt").write_text("\n".join(neg) + "\n")
    out = tmp_path / "v.gguf"
    cli("steer", "build", "--positive", str(tmp_path / "p.txt"), "--negative", str(tmp_path / "n.txt"), "--layers", "10-11",
        "-o", str(out), "--device", "cpu")
    want = scalpel.ControlVector.load(str(out))
    assert sorted(cv.directions) == [10, 11]
    for l in (10, 11):
        np.testing.assert_array_equal(cv.directions[l], want.directions[l])
    assert sorted(model.build_steering(pos, neg, layers=[0, 3]).directions) == [3], "layer 0 is left out, as in llama.cpp"
    with pytest.raises(ValueError, match="method"):
        model.build_steering(pos, neg, layers=3, method="median")


def test_patchscope_matches_the_cli(model):
    p = model.patchscope("Paris is the capital of France", source_layer=4, max_tokens=6)
    want = json.loads(cli("patchscope", "--source", "Paris is the capital of France", "--source-layer", "4", "-n", "6", "--json", "--device", "cpu"))
    assert p.results[0]["generated_ids"] == want["results"][0]["generated_ids"]
    assert p.unpatched["generated_ids"] == want["unpatched"]["generated_ids"]
    assert "France" in p.texts()[4] and "unpatched" in p._repr_html_()
    sweep = model.patchscope("Paris is the capital of France", max_tokens=2, sweep=True)
    assert [r["source_layer"] for r in sweep.results] == list(range(model.n_layers))
    with pytest.raises(ValueError, match="placeholder"):
        model.patchscope("x", placeholder="#")


def test_neurons_and_pca(model):
    n = model.neurons("The capital of France is Paris", layer=-20)
    assert n.layer == 10 and n.activations.shape == (len(n.tokens), model.d_mlp)
    want = json.loads(cli("neurons", "-p", "The capital of France is Paris", "--layer", "10", "--neuron", "903", "--json", "--device", "cpu"))
    np.testing.assert_array_equal(n.neuron(903), np.asarray(want["activations"], np.float32))
    top = n.top(3)
    assert top[2][0][1] == float(n.activations[2].max()) and "<table" in n._repr_html_()
    prompts = ["I ate a crisp apple", "She peeled a banana", "Apple launched a phone", "Google released a product", "The dog barked"]
    c = model.pca(prompts, layer=15, groups=["fruit", "fruit", "company", "company", ""])
    assert c.coords.shape == (5, 2) and c.explained[0] >= c.explained[1] > 0
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"scalpel-pca-{os.getpid()}.txt")
    with open(path, "w") as f:
        f.write("\n".join(prompts) + "\n")
    try:
        want = json.loads(cli("pca", "--prompts", path, "--layer", "15", "--json", "--device", "cpu"))
    finally:
        os.remove(path)
    np.testing.assert_allclose(c.coords, [p["coords"] for p in want["points"]], rtol=1e-9)
    png = c.png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    page = c._repr_html_()
    assert page.startswith("<img") and "data:image/png;base64," in page and "<script" not in page
    with pytest.raises(ValueError, match="layer"):
        model.neurons("x", layer=99)
    with pytest.raises(ValueError, match="groups"):
        model.pca(prompts, layer=3, groups=["a"])


def test_named_parameters_as_numpy(model):
    names = model.param_names()
    assert names[0] == "model.embed_tokens.weight" and "model.norm.weight" in names
    assert "lm_head.weight" not in names, "SmolLM2 ties its LM head to the embedding"
    assert len(names) == 1 + 9 * model.n_layers + 1
    e = model.W_E
    assert e.shape == (model.d_vocab, model.d_model) and e.dtype == np.float32
    ids = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(PROMPT, names="embed")
    np.testing.assert_array_equal(cache["embed"], e[ids], "the embed point is the table's rows")
    assert model.W_U.shape == (model.d_model, model.d_vocab) and np.array_equal(model.W_U, e.T)
    q = model.param("model.layers.3.self_attn.q_proj.weight")
    assert q.shape == (model.n_heads * model.d_head, model.d_model)
    # The GGUF name gives the same array as the Hugging Face name (llama.cpp's row order undone).
    np.testing.assert_array_equal(model.param("blk.3.attn_q.weight"), q)
    # The MLP's parameters are the ones the forward pass uses: mlp_post = silu(gate x) * (up x) of
    # the normed resid_mid.
    _, cache = model.run_with_cache(PROMPT, names=["blocks.2.resid_mid", "blocks.2.mlp_post"])
    x = cache["blocks.2.resid_mid"].astype(np.float64)
    eps = model.config["rms_eps"]
    x = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps) * model.param("model.layers.2.post_attention_layernorm.weight")
    gate = x @ model.param("model.layers.2.mlp.gate_proj.weight").T
    up = x @ model.param("model.layers.2.mlp.up_proj.weight").T
    assert rel(gate / (1 + np.exp(-gate)) * up, cache["blocks.2.mlp_post"]) < 1e-4
    with pytest.raises(ValueError, match="no parameter"):
        model.param("model.layers.99.mlp.up_proj.weight")
    with pytest.raises(ValueError, match="tied"):
        model.param("lm_head.weight")


def test_top_examples_finds_the_planted_context(model, tmp_path):
    subj = ["The cat", "My neighbour", "A teacher", "The old man", "Our team", "The river", "A small bird"]
    verb = ["walked to", "looked at", "talked about", "waited for", "painted", "visited", "cleaned"]
    obj = ["the market", "a red door", "the garden", "an empty room", "the long road", "the blue sky"]
    docs = [" ".join(f"{subj[(i + j) % 7]} {verb[(i * 3 + j) % 7]} {obj[(i * 5 + j) % 6]}." for j in range(1 + i % 3)) for i in range(30)]
    planted = "The violinist tuned her instrument before the concert in Vienna began."
    docs.insert(17, planted)
    # The direction: Vienna's residual minus Berlin's in the same sentence (what is common cancels).
    _, a = model.run_with_cache(planted, names="blocks.6.resid_post")
    _, b = model.run_with_cache(planted.replace("Vienna", "Berlin"), names="blocks.6.resid_post")
    at = a.str_tokens.index(" Vienna")
    v = a["blocks.6.resid_post"][at] - b["blocks.6.resid_post"][at]
    top = model.top_examples(docs, direction=v, layer=6, top=3)
    first = top.examples[0]
    assert (first["document"], first["token"], first["position"]) == (17, " Vienna", at)
    assert top.documents == 31 and "Vienna" in top._repr_html_() and "<script" not in top._repr_html_()
    # The same corpus from a file through the CLI: the same examples.
    (tmp_path / "c.txt").write_text("\n\n".join(docs) + "\n")
    scalpel.ControlVector({6: v}).save(str(tmp_path / "v.gguf"))
    want = json.loads(cli("top-examples", "--corpus", str(tmp_path / "c.txt"), "--direction", str(tmp_path / "v.gguf"),
                          "--top", "3", "--json", "--device", "cpu"))
    from_file = model.top_examples(tmp_path / "c.txt", direction=str(tmp_path / "v.gguf"), top=3)
    assert from_file.examples == want["examples"] == top.examples
    # A neuron's scores, best first; a head's attention to a token.
    n = model.top_examples(docs, layer=6, neuron=100, top=5)
    assert [e["score"] for e in n.examples] == sorted((e["score"] for e in n.examples), reverse=True)
    h = model.top_examples(docs, layer=3, head=2, key="the", top=2, max_documents=10)
    assert h.documents == 10 and all(0 <= e["score"] <= 1 for e in h.examples)
    with pytest.raises(FileNotFoundError):
        model.top_examples(tmp_path / "missing.txt", layer=1, neuron=1)
    with pytest.raises(ValueError, match="one of"):
        model.top_examples(docs, layer=1)
    with pytest.raises(ValueError, match="neurons 0"):
        model.top_examples(docs, layer=1, neuron=10**6)


def test_interventions_at_positions_and_replace(model):
    """steer/ablate at chosen positions do what a hook does at those rows and nothing elsewhere;
    replace transplants a row as a hook would, and in generation reproduces the Patchscope."""
    prompt = "The movie was really good"
    base = model(prompt)
    _, base_cache = model.run_with_cache(prompt, names="blocks.*.resid_post")
    v = np.random.default_rng(3).standard_normal(model.d_model).astype(np.float32)

    def add_at_2(a, n):
        a[2] += 2.0 * v

    steered = model(prompt, interventions=[model.steer(v, 2.0, layers=5, positions=[2])])
    assert rel(steered, model.run_with_hooks(prompt, [("blocks.5.resid_post", add_at_2)])) < 1e-6
    assert np.array_equal(steered[:2], base[:2]) and rel(steered[2:], base[2:]) > 1e-4, "causal: earlier rows untouched"

    u = v / np.linalg.norm(v)
    _, cache = model.run_with_cache(prompt, names="blocks.*.resid_post", interventions=[model.ablate(u, positions=[3])])
    for name, rows in cache.items():
        assert abs(rows[3] @ u) <= 1e-4 * np.abs(rows[3]).max() * np.sqrt(model.d_model), name
        assert np.array_equal(rows[:3], base_cache[name][:3]), name

    source = "Paris is the capital of France"
    target = "cat -> cat\n1135 -> 1135\nhello -> hello\n?"
    _, src = model.run_with_cache(source, names="blocks.4.resid_post")
    row = src["blocks.4.resid_post"][-1]
    last = len(model.to_tokens(target)) - 1
    swap = model.replace("blocks.4.resid_post", last, row)

    def put(a, n):
        a[last] = row

    assert np.array_equal(model(target, interventions=[swap]), model.run_with_hooks(target, [("blocks.4.resid_post", put)]))
    scope = model.patchscope(source, source_layer=4, max_tokens=6)
    with swap:
        assert model.generate(target, max_tokens=6) == scope.texts()[4]
    assert "France" in scope.texts()[4]

    with pytest.raises(ValueError, match="positions"):
        model.steer(v, 1.0, layers=5, positions=[-1])
    with pytest.raises(ValueError, match="one probe point"):
        model(target, interventions=[model.replace("blocks.*.resid_post", 0, row)])
    with pytest.raises(ValueError):
        model(target, interventions=[model.replace("blocks.4.resid_post", 0, row[:7])])
    with pytest.raises(ValueError, match="edited"):
        model(target, interventions=[model.replace("blocks.4.attn_probs", 0, row)])


def test_run_with_cache_does_not_leak(model):
    """200 run_with_cache calls in a loop: resident memory stays flat (nothing kept across the
    boundary). The first calls settle the allocators; the growth after them is measured."""
    def rss_mib():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024

    for _ in range(20):
        model.run_with_cache(PROMPT)
    before = rss_mib()
    for _ in range(200):
        logits, cache = model.run_with_cache(PROMPT)
    del logits, cache
    grown = rss_mib() - before
    # One call's cache (every point, logits included) is ~18 MiB here: keeping each call's would
    # grow by ~3.5 GiB (checked by holding them on purpose).
    assert grown < 20, f"resident memory grew by {grown:.1f} MiB over 200 calls"
