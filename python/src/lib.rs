//! scalpel's engine as the Python extension module `scalpel._scalpel`: a thin layer over the
//! library. The Python package (python/scalpel/) wraps this in the documented API (`Model`,
//! `ActivationCache`, ...); everything here takes plain arguments and returns plain values, numpy
//! arrays or JSON text, so that the API's shape is written once, in Python.
//!
//! The GIL is released for every forward pass and generation; Python code (hooks, streaming
//! callbacks, signal checks) runs with it taken back for that call only.

mod microscope;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{
    PyFileNotFoundError, PyKeyboardInterrupt, PyMemoryError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use scalpel::backend::cpu::Cpu;
use scalpel::backend::cpu::qmatmul::{Activations, set_activations};
use scalpel::backend::cuda::{Cuda, MockOptions};
use scalpel::backend::{Backend, Device as _};
use scalpel::cli::common::PromptArgs;
use scalpel::forward::Model;
use scalpel::generate::{GenerateOptions, generate};
use scalpel::interp::attribution;
use scalpel::interp::capture;
use scalpel::interp::patching::{self, Metric, Site};
use scalpel::interp::steer::{ControlVector, ablate_with, steer_with};
use scalpel::interp::words::resolve_token;
use scalpel::model::ModelFiles;
use scalpel::model::stored::WeightMode;
use scalpel::model::weights::{Weight, all_weights};
use scalpel::probe::{self, Captured, Edit, Hook, Point, Positions, Probes};
use scalpel::sample::SamplingParams;
use std::path::{Path, PathBuf};

/// The engine's error as the matching Python exception, with the engine's own message.
fn py_err(e: scalpel::Error) -> PyErr {
    use scalpel::Error as E;
    let msg = e.to_string();
    match &e {
        E::Invalid(_) => PyValueError::new_err(msg),
        E::NotFound(_) => PyFileNotFoundError::new_err(msg),
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        E::Interrupted(_) => PyKeyboardInterrupt::new_err(msg),
        E::OutOfMemory(_) => PyMemoryError::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

/// A Python exception raised inside engine work (a hook, a callback, Ctrl-C): kept here while
/// the engine unwinds with a plain error, then raised as it was.
#[derive(Clone, Default)]
struct Raised(Arc<Mutex<Option<PyErr>>>);

impl Raised {
    fn keep(&self, e: PyErr, what: &str) -> scalpel::Error {
        *self.0.lock().expect("not poisoned") = Some(e);
        scalpel::Error::Interrupted(format!("{what} raised an exception"))
    }

    /// The kept exception if there is one, else the engine's error.
    fn or(&self, e: scalpel::Error) -> PyErr {
        self.0.lock().expect("not poisoned").take().unwrap_or_else(|| py_err(e))
    }

    fn take(&self) -> Option<PyErr> {
        self.0.lock().expect("not poisoned").take()
    }
}

/// A loaded model on one of the backends.
enum Loaded {
    Cpu(Model<Cpu>),
    Cuda(Model<Cuda>),
}

/// Runs `$body` with `$m` bound to the model, whatever its backend.
macro_rules! with_model {
    ($loaded:expr, $m:ident => $body:expr) => {
        match $loaded {
            Loaded::Cpu($m) => $body,
            Loaded::Cuda($m) => $body,
        }
    };
}

fn parse_device(device: &str) -> PyResult<&'static str> {
    match device {
        "auto" => Ok("auto"),
        "cpu" => Ok("cpu"),
        "cuda" => Ok("cuda"),
        "mock" => Ok("mock"),
        other => Err(PyValueError::new_err(format!("device {other:?}: expected auto, cpu, cuda or mock"))),
    }
}

/// The engine behind `scalpel.Model`.
#[pyclass(module = "scalpel._scalpel", frozen)]
struct Engine {
    files: ModelFiles,
    model: Loaded,
}

/// A built-in intervention, applied by the engine without Python in the loop: a steering vector
/// added or a direction ablated with the CLI's semantics (`--steer`, `--ablate`), at chosen
/// positions or all; or one row of a probe point replaced.
enum Intervention {
    Steer { vector: ControlVector, scale: f32, layers: Option<String>, positions: Positions, source: PathBuf },
    Ablate { vector: ControlVector, layers: Option<String>, positions: Positions, source: PathBuf },
    Replace { point: Point, position: usize, row: Vec<f32> },
}

/// From Python: (kind, {layer: vector}, scale, layers spec or None, source name, positions or
/// None). A replacement is ("replace", {position: row}, 0, point name, "", None).
type InterventionArg = (String, BTreeMap<usize, Vec<f32>>, f32, Option<String>, String, Option<Vec<usize>>);

fn interventions(args: Vec<InterventionArg>, n_layers: usize) -> PyResult<Vec<Intervention>> {
    args.into_iter()
        .map(|(kind, directions, scale, layers, source, positions)| {
            if !scale.is_finite() {
                return Err(PyValueError::new_err(format!("{source}: the scale {scale} is not finite")));
            }
            let positions = positions.map_or(Positions::All, Positions::Only);
            let vector = |directions| ControlVector { directions, model_hint: String::new() };
            match kind.as_str() {
                "steer" => Ok(Intervention::Steer {
                    vector: vector(directions),
                    scale,
                    layers,
                    positions,
                    source: PathBuf::from(source),
                }),
                "ablate" => Ok(Intervention::Ablate {
                    vector: vector(directions),
                    layers,
                    positions,
                    source: PathBuf::from(source),
                }),
                "replace" => {
                    let name = layers.unwrap_or_default();
                    let points = probe::select(&name, n_layers).map_err(py_err)?;
                    let [point] = points[..] else {
                        return Err(PyValueError::new_err(format!(
                            "replace needs one probe point, {name:?} names {}",
                            points.len()
                        )));
                    };
                    let Some((position, row)) = directions.into_iter().next() else {
                        return Err(PyValueError::new_err("replace needs a row"));
                    };
                    Ok(Intervention::Replace { point, position, row })
                }
                other => Err(PyValueError::new_err(format!(
                    "intervention {other:?}: expected steer, ablate or replace"
                ))),
            }
        })
        .collect()
}

/// Probes holding the interventions' edits.
fn probes_with<B: Backend>(m: &Model<B>, edits: &[Intervention]) -> scalpel::Result<Probes<B>> {
    let mut probes = Probes::none();
    for e in edits {
        match e {
            Intervention::Steer { vector, scale, layers, positions, source } => {
                steer_with(m, &mut probes, vector, *scale, layers.as_deref(), positions, source)?
            }
            Intervention::Ablate { vector, layers, positions, source } => {
                ablate_with(m, &mut probes, vector, layers.as_deref(), positions, source)?
            }
            Intervention::Replace { point, position, row } => {
                let row = m.backend.upload(row, &[row.len()])?;
                probes.edit(*point, Edit::Replace { position: *position, row })?
            }
        }
    }
    Ok(probes)
}

/// One forward pass over `ids` with the interventions and hooks, capturing `capture` and the
/// logits (a capture of `logits` makes the pass compute every row's).
fn forward_once<B: Backend>(
    m: &Model<B>,
    ids: &[u32],
    capture: &[Point],
    hooks: Vec<(Point, Hook)>,
    edits: &[Intervention],
) -> scalpel::Result<BTreeMap<Point, Captured>> {
    let mut probes = probes_with(m, edits)?;
    for (p, h) in hooks {
        probes.hook(p, h);
    }
    capture::capture_with(m, ids, capture.iter().copied().chain([Point::Logits]), probes)
}

/// A float array of `shape` for Python.
fn array<'py>(py: Python<'py>, data: Vec<f32>, shape: &[usize]) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    data.into_pyarray(py).reshape(shape.to_vec())
}

#[pymethods]
impl Engine {
    /// Opens and loads a model (the CLI's names, paths and repo ids; None = the default model).
    #[new]
    #[pyo3(signature = (model=None, device="auto", weights="stored", activations="f32"))]
    fn new(
        py: Python<'_>,
        model: Option<String>,
        device: &str,
        weights: &str,
        activations: &str,
    ) -> PyResult<Self> {
        let device = parse_device(device)?;
        let mode = match weights {
            "stored" => WeightMode::Stored,
            "f32" => WeightMode::F32,
            other => return Err(PyValueError::new_err(format!("weights {other:?}: expected stored or f32"))),
        };
        let act = match activations {
            "f32" => Activations::F32,
            "int8" => Activations::Int8,
            other => {
                return Err(PyValueError::new_err(format!("activations {other:?}: expected f32 or int8")));
            }
        };
        py.detach(move || -> scalpel::Result<Engine> {
            let mut files = ModelFiles::open(model.as_deref())?;
            files.weight_mode = mode;
            set_activations(act);
            let model = match device {
                "cpu" => Loaded::Cpu(Model::load(Cpu, &files)?),
                "cuda" => Loaded::Cuda(Model::load(Cuda::new(0)?, &files)?),
                "mock" => Loaded::Cuda(Model::load(Cuda::mock(MockOptions::from_env()?)?, &files)?),
                // As the CLI's auto: the GPU when one is usable, else the CPU; never the mock.
                _ => match Cuda::available().then(|| Cuda::new(0)) {
                    Some(Ok(cuda)) => Loaded::Cuda(Model::load(cuda, &files)?),
                    _ => Loaded::Cpu(Model::load(Cpu, &files)?),
                },
            };
            Ok(Engine { files, model })
        })
        .map_err(py_err)
    }

    /// The model's configuration as JSON.
    fn config_json(&self) -> String {
        serde_json::to_string(&self.files.config).expect("the config serializes")
    }

    /// What the user named (or the default model's name).
    #[getter]
    fn label(&self) -> String {
        self.files.label.clone()
    }

    /// The backend: "cpu", "cuda" or "mock".
    #[getter]
    fn device(&self) -> String {
        with_model!(&self.model, m => m.backend.name().to_string())
    }

    /// Token ids of `text` (with the model's BOS where it adds one; `chat` applies its template).
    #[pyo3(signature = (text, chat=false))]
    fn encode(&self, text: String, chat: bool) -> PyResult<Vec<u32>> {
        PromptArgs::new(text, chat).encode(&self.files.tokenizer).map(|(_, ids)| ids).map_err(py_err)
    }

    fn decode(&self, ids: Vec<u32>) -> PyResult<String> {
        self.check_ids(&ids)?;
        self.files.tokenizer.decode(&ids).map_err(py_err)
    }

    /// Each id decoded alone (as `trace` names tokens).
    fn pieces(&self, ids: Vec<u32>) -> PyResult<Vec<String>> {
        self.check_ids(&ids)?;
        ids.iter().map(|&i| self.files.tokenizer.decode(&[i])).collect::<scalpel::Result<_>>().map_err(py_err)
    }

    /// Probe names matching comma-separated patterns, in forward order.
    fn select_points(&self, patterns: &str) -> PyResult<Vec<String>> {
        Ok(probe::select(patterns, self.files.config.n_layers)
            .map_err(py_err)?
            .iter()
            .map(|p| p.to_string())
            .collect())
    }

    /// One forward pass over `ids`: (logits [T, vocab], {name: array}) for the points named by
    /// `capture` (patterns), with `hooks` — (pattern, callable(array, name) -> array | None) —
    /// run at their points.
    #[pyo3(signature = (ids, capture=Vec::new(), hooks=Vec::new(), edits=Vec::new()))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<u32>,
        capture: Vec<String>,
        hooks: Vec<(String, Py<PyAny>)>,
        edits: Vec<InterventionArg>,
    ) -> PyResult<(Bound<'py, PyArrayDyn<f32>>, Bound<'py, PyDict>)> {
        let edits = interventions(edits, self.files.config.n_layers)?;
        let n_layers = self.files.config.n_layers;
        let mut points = Vec::new();
        for pat in &capture {
            points.extend(probe::select(pat, n_layers).map_err(py_err)?);
        }
        points.sort();
        points.dedup();
        let raised = Raised::default();
        let mut rust_hooks: Vec<(Point, Hook)> = Vec::new();
        for (pat, f) in hooks {
            if !f.bind(py).is_callable() {
                return Err(PyValueError::new_err(format!("the hook for {pat:?} is not callable")));
            }
            for p in probe::select(&pat, n_layers).map_err(py_err)? {
                rust_hooks.push((p, python_hook(f.clone_ref(py), raised.clone())));
            }
        }
        let out =
            py.detach(|| with_model!(&self.model, m => forward_once(m, &ids, &points, rust_hooks, &edits)));
        let mut captured = out.map_err(|e| raised.or(e))?;
        let logits = match points.contains(&Point::Logits) {
            true => captured[&Point::Logits].clone(),
            false => captured.remove(&Point::Logits).expect("the logits are always captured"),
        };
        let cache = PyDict::new(py);
        for (p, c) in captured {
            cache.set_item(p.to_string(), array(py, c.data, &c.shape)?)?;
        }
        Ok((array(py, logits.data, &logits.shape)?, cache))
    }

    /// Generates from `prompt` as `scalpel generate` does (same tokens for the same arguments
    /// and seed). `on_piece(text) -> bool | None` gets each piece of text as it is decoded;
    /// returning False stops. Returns a JSON object: text, ids, stop reason, speeds.
    #[pyo3(signature = (prompt, max_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, chat, on_piece=None, edits=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: String,
        max_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        min_p: Option<f32>,
        repetition_penalty: Option<f32>,
        seed: u64,
        chat: bool,
        on_piece: Option<Py<PyAny>>,
        edits: Vec<InterventionArg>,
    ) -> PyResult<String> {
        let edits = interventions(edits, self.files.config.n_layers)?;
        let sampling = SamplingParams { temperature, top_k, top_p, min_p, repetition_penalty, seed };
        sampling.validate().map_err(py_err)?;
        let context = self.files.config.context_length;
        let tok = &self.files.tokenizer;
        let (_, ids) = PromptArgs::new(prompt, chat)
            .encode_fitted(tok, context, max_tokens.min(context / 2))
            .map_err(py_err)?;
        scalpel::generate::cache_size(ids.len(), max_tokens, context).map_err(py_err)?;
        let opts = GenerateOptions { max_tokens, sampling, stop_at_eos: true };
        let raised = Raised::default();
        let eos = &self.files.config.eos_token_ids;
        let mut text = String::new();
        let mut stream = tok.stream();
        let result = py.detach(|| {
            with_model!(&self.model, m => generate(m, &ids, &opts, &mut probes_with(m, &edits)?, |id| {
                let piece = if eos.contains(&id) { String::new() } else { stream.push(id)? };
                text.push_str(&piece);
                Python::attach(|py| -> scalpel::Result<bool> {
                    // Ctrl-C (KeyboardInterrupt) and a callback's exception end the generation
                    // after this token; they are raised once it has stopped.
                    py.check_signals().map_err(|e| raised.keep(e, "a signal handler"))?;
                    match (&on_piece, piece.is_empty()) {
                        (Some(f), false) => {
                            let r = f.call1(py, (piece,)).map_err(|e| raised.keep(e, "on_piece"))?;
                            Ok(!r.bind(py).is(&*pyo3::types::PyBool::new(py, false)))
                        }
                        _ => Ok(true),
                    }
                })
            }))
        });
        let g = result.map_err(|e| raised.or(e))?;
        if let Some(e) = raised.take() {
            return Err(e);
        }
        let rest = stream.finish().map_err(py_err)?;
        if !rest.is_empty() {
            if let Some(f) = &on_piece {
                f.call1(py, (rest.clone(),))?;
            }
            text.push_str(&rest);
        }
        Ok(serde_json::json!({
            "text": text,
            "prompt_ids": g.prompt_ids,
            "generated_ids": g.generated_ids,
            "stop": g.stop,
            "prefill_tokens_per_second": g.prefill_tokens_per_second(),
            "decode_tokens_per_second": g.decode_tokens_per_second(),
        })
        .to_string())
    }

    /// One token named by text or `#id` (a word with its leading space first): (id, text).
    fn token(&self, spec: &str) -> PyResult<(u32, String)> {
        resolve_token(&self.files.tokenizer, spec, "token").map_err(py_err)
    }

    /// Activation patching of `corrupted` by `clean` (ids of the same length): JSON with the
    /// clean and corrupted metric and, per site, `normalized` and `metric` grids [layer][position
    /// or head]. `metric`: logit_diff (needs `wrong`), logit, prob, logprob.
    #[pyo3(signature = (clean, corrupted, metric, answer, wrong=None, sites=Vec::new(), head_position=None))]
    #[allow(clippy::too_many_arguments)]
    fn patch(
        &self,
        py: Python<'_>,
        clean: Vec<u32>,
        corrupted: Vec<u32>,
        metric: &str,
        answer: u32,
        wrong: Option<u32>,
        sites: Vec<String>,
        head_position: Option<usize>,
    ) -> PyResult<String> {
        // The engine checks every id (the prompts in the forward pass, the metric's tokens first).
        let metric = Metric::named(Some(metric), answer, wrong).map_err(py_err)?;
        let sites: Vec<Site> =
            sites.iter().map(|s| s.parse()).collect::<scalpel::Result<_>>().map_err(py_err)?;
        let r = py.detach(|| {
            with_model!(&self.model, m => patching::patch(m, &clean, &corrupted, metric, &sites, head_position))
        });
        let r = r.map_err(py_err)?;
        let sites: serde_json::Map<String, serde_json::Value> = r
            .sweeps
            .iter()
            .map(|s| {
                (s.site.name().to_string(), serde_json::json!({"normalized": s.normalized, "metric": s.raw}))
            })
            .collect();
        Ok(serde_json::json!({"clean": r.clean, "corrupted": r.corrupted, "sites": sites}).to_string())
    }

    /// The parameters the forward pass reads, by Hugging Face name (`model.layers.3.mlp.up_proj.weight`,
    /// whatever the file), with the file's own name: [(name, file_name, shape)]. A tied LM head
    /// is not listed.
    fn param_names(&self) -> Vec<(String, String, Vec<usize>)> {
        let (c, w) = (&self.files.config, &self.files.weights);
        all_weights(c)
            .into_iter()
            .filter(|&x| !(x == Weight::LmHead && c.tie_embeddings))
            .map(|x| (x.hf_name(c.arch, "model."), w.name_of(x, c), x.shape(c)))
            .collect()
    }

    /// One parameter as f32 (dequantized from the stored format), in Hugging Face's layout, by its
    /// Hugging Face or file name.
    fn param<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let (c, files) = (&self.files.config, &self.files.weights);
        let found = all_weights(c)
            .into_iter()
            .find(|&x| x.hf_name(c.arch, "model.") == name || files.name_of(x, c) == name);
        let Some(w) = found else {
            return Err(PyValueError::new_err(format!(
                "no parameter {name:?} (model.param_names() lists them)"
            )));
        };
        let data = py.detach(|| files.load(w, c)).map_err(py_err)?;
        let Some(data) = data else {
            return Err(PyValueError::new_err(format!(
                "{name}: the file has no such tensor (the LM head is tied to the embedding)"
            )));
        };
        array(py, data, &w.shape(c))
    }

    /// Microscope operation `op` (lens, heads, layers, find_word, neighbors, analogy, similarity,
    /// patchscope, pca, steer_build, top_examples) with its arguments as JSON; answers JSON.
    fn microscope(&self, py: Python<'_>, op: &str, args: &str) -> PyResult<String> {
        let tok = &self.files.tokenizer;
        let raised = Raised::default();
        // Between the steps of a long operation: Ctrl-C (KeyboardInterrupt) stops it there.
        let between =
            || Python::attach(|py| py.check_signals().map_err(|e| raised.keep(e, "a signal handler")));
        let v = py.detach(|| with_model!(&self.model, m => microscope::call(m, tok, op, args, between)));
        let v = v.map_err(|e| raised.or(e))?;
        Ok(v.to_string())
    }

    /// A picture drawn by the CLI's chart code (`scatter`), from JSON arguments: PNG bytes.
    fn picture<'py>(&self, py: Python<'py>, op: &str, args: &str) -> PyResult<Bound<'py, PyBytes>> {
        let png = py.detach(|| microscope::picture(op, args)).map_err(py_err)?;
        Ok(PyBytes::new(py, &png))
    }

    /// Direct logit attribution of `answer`'s logit (minus `wrong`'s) at `position` of `ids`: JSON
    /// with embed, layers [{attn, mlp, heads}], direct (the final residual's projection) and logit.
    #[pyo3(signature = (ids, position, answer, wrong=None))]
    fn attribute(
        &self,
        py: Python<'_>,
        ids: Vec<u32>,
        position: usize,
        answer: u32,
        wrong: Option<u32>,
    ) -> PyResult<String> {
        let a = py.detach(
            || with_model!(&self.model, m => attribution::attribute(m, &ids, position, answer, wrong)),
        );
        serde_json::to_string(&a.map_err(py_err)?).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }
}

impl Engine {
    fn check_ids(&self, ids: &[u32]) -> PyResult<()> {
        self.files.config.check_ids(ids).map_err(py_err)
    }
}

/// A Python callable as a probe hook: called with a writable array of the values and the point's
/// name; a returned array (same shape) replaces the values, None keeps the array it was given
/// (changed in place or not).
fn python_hook(f: Py<PyAny>, raised: Raised) -> Hook {
    Box::new(move |point, _start, shape, data| {
        Python::attach(|py| -> scalpel::Result<bool> {
            let name = point.to_string();
            let arr = array(py, data.to_vec(), shape).map_err(|e| raised.keep(e, "a hook"))?;
            let ret = f
                .call1(py, (arr.clone(), name.clone()))
                .map_err(|e| raised.keep(e, &format!("the hook at {name}")))?;
            let ret = ret.bind(py);
            let new: PyReadonlyArrayDyn<f32> = if ret.is_none() {
                arr.readonly()
            } else {
                ret.extract::<PyReadonlyArrayDyn<f32>>()
                    .map_err(|e| raised.keep(PyErr::from(e), &format!("the hook at {name}")))?
            };
            if new.shape() != shape {
                let e = PyValueError::new_err(format!(
                    "the hook at {name} returned an array of shape {:?}; the point's shape is {shape:?}",
                    new.shape()
                ));
                return Err(raised.keep(e, "a hook"));
            }
            let new = new.as_array();
            let mut changed = false;
            for (d, &v) in data.iter_mut().zip(new.iter()) {
                if d.to_bits() != v.to_bits() {
                    *d = v;
                    changed = true;
                }
            }
            Ok(changed)
        })
    })
}

/// Directions by layer, as numpy arrays.
type Directions<'py> = BTreeMap<usize, Bound<'py, PyArrayDyn<f32>>>;

/// A llama.cpp control-vector file: ({layer: direction}, model hint).
#[pyfunction]
fn read_control_vector(py: Python<'_>, path: PathBuf) -> PyResult<(Directions<'_>, String)> {
    let cv = ControlVector::read(&path).map_err(py_err)?;
    let mut out = BTreeMap::new();
    for (l, v) in cv.directions {
        let n = v.len();
        out.insert(l, array(py, v, &[n])?);
    }
    Ok((out, cv.model_hint))
}

/// Writes a control-vector file (never over an existing file unless `force`).
#[pyfunction]
#[pyo3(signature = (path, directions, model_hint=String::new(), force=false))]
fn write_control_vector(
    path: PathBuf,
    directions: BTreeMap<usize, Vec<f32>>,
    model_hint: String,
    force: bool,
) -> PyResult<()> {
    if directions.is_empty() {
        return Err(PyValueError::new_err("a control vector needs at least one layer's direction"));
    }
    let width = directions.values().next().map_or(0, Vec::len);
    if let Some((l, v)) = directions.iter().find(|(_, v)| v.len() != width || v.is_empty()) {
        return Err(PyValueError::new_err(format!(
            "direction for layer {l} has {} values; every direction needs the same, nonzero width ({width})",
            v.len()
        )));
    }
    ControlVector { directions, model_hint }.write(Path::new(&path), force).map_err(py_err)
}

#[pymodule]
fn _scalpel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The importing thread (the one that runs the model, as a rule) joins the CPU pool, as the
    // CLI's does, which saves a hand-off to the workers on every op. Only with two threads or
    // more: with one, a model run from another Python thread would wait for this one.
    if scalpel::backend::cpu::configured_threads() >= 2 {
        // An error means the pool already exists (something ran parallel work first): it then
        // works as before, only without this thread.
        let _ = scalpel::backend::cpu::use_this_thread_in_pool();
    }
    m.add_class::<Engine>()?;
    m.add_function(wrap_pyfunction!(read_control_vector, m)?)?;
    m.add_function(wrap_pyfunction!(write_control_vector, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
