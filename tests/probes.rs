//! The probe mechanism: captures see what the forward pass computes, and the edits (add, replace,
//! ablate) do exactly what they say, at exactly the positions asked, and activation patching built
//! on them restores what it should — one test body, run on the CPU and on the CUDA backend (the mock
//! device in every run; the GPU too where there is one).

#[macro_use]
mod common;

use common::tiny::{Lcg, Tiny};
use scalpel::backend::Backend;
use scalpel::forward::{Logits, Model};
use scalpel::interp::patching::{Metric, Patcher, Site, patch};
use scalpel::model::ModelFiles;
use scalpel::probe::{Edit, Point, Positions, Probes};

/// The tiny model on `backend` (the temporary directory holds its file).
fn tiny<B: Backend>(backend: B) -> (tempfile::TempDir, Model<B>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    std::fs::write(&p, Tiny::default().gguf()).unwrap();
    let files = ModelFiles::open(Some(p.to_str().unwrap())).unwrap();
    let model = Model::load(backend, &files).unwrap();
    (dir, model)
}

fn run<B: Backend>(model: &Model<B>, ids: &[u32], probes: &mut Probes<B>) -> Vec<f32> {
    let mut cache = model.new_cache(ids.len()).unwrap();
    let logits = model.forward(ids, 0, &mut cache, probes, Logits::All).unwrap();
    model.backend.download(&logits).unwrap()
}

on_every_device!(
    seed = 5;
    every_point_is_captured_with_its_shape,
    adding_a_zero_scaled_vector_changes_nothing_and_a_scaled_one_does,
    ablation_leaves_the_residual_orthogonal_to_the_direction,
    replacing_a_row_with_its_own_value_is_the_identity_and_another_row_is_not,
    attention_probabilities_cannot_be_edited,
    decoding_with_the_cache_equals_one_long_forward,
    hooks_see_each_point_once_and_their_changes_flow_on,
    heads_split_the_attention_output_and_one_can_be_ablated,
    patching_the_one_differing_position_restores_the_clean_run,
    top_examples_are_the_best_scores_by_their_definition,
);

const IDS: [u32; 6] = [40, 41, 72, 101, 108, 111];

fn every_point_is_captured_with_its_shape<B: Backend>(backend: B) {
    let (_d, model) = tiny(backend);
    let c = model.config.clone();
    let mut probes = Probes::capturing(Point::all(c.n_layers));
    let logits = run(&model, &IDS, &mut probes);
    let cap = probes.captured();
    let t = IDS.len();
    for p in Point::all(c.n_layers) {
        let got = &cap[&p][0];
        let want = match p {
            Point::AttnProbs(_) => vec![c.n_heads, t, t],
            Point::AttnZ(_) => vec![t, c.n_heads, c.head_dim],
            Point::HeadOut(_) => vec![t, c.n_heads, c.hidden_size],
            Point::MlpPost(_) => vec![t, c.intermediate_size],
            Point::Logits => vec![t, c.vocab_size],
            _ => vec![t, c.hidden_size],
        };
        assert_eq!(got.shape, want, "{p}");
        assert!(got.data.iter().all(|x| x.is_finite()), "{p}");
    }
    assert_eq!(cap[&Point::Logits][0].data, logits);
    // resid_pre of a layer is resid_post of the one before; resid_mid = resid_pre + attn_out.
    assert_eq!(cap[&Point::ResidPre(1)][0].data, cap[&Point::ResidPost(0)][0].data);
    let (pre, attn, mid) = (
        &cap[&Point::ResidPre(1)][0].data,
        &cap[&Point::AttnOut(1)][0].data,
        &cap[&Point::ResidMid(1)][0].data,
    );
    for i in 0..pre.len() {
        assert_eq!(pre[i] + attn[i], mid[i]);
    }
    // Attention rows are causal distributions.
    let probs = &cap[&Point::AttnProbs(0)][0].data;
    for (r, row) in probs.chunks(t).enumerate() {
        let q = r % t;
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(row[q + 1..].iter().all(|&x| x == 0.0), "row {r} sees the future");
    }
}

fn adding_a_zero_scaled_vector_changes_nothing_and_a_scaled_one_does<B: Backend>(backend: B) {
    let (_d, model) = tiny(backend);
    let plain = run(&model, &IDS, &mut Probes::none());
    let d = model.config.hidden_size;
    let v = Lcg(9).vec(d, 1.0);
    let mut zero = Probes::none();
    zero.edit(
        Point::ResidPost(0),
        Edit::Add { vector: model.backend.upload(&v, &[d]).unwrap(), scale: 0.0, positions: Positions::All },
    )
    .unwrap();
    assert_eq!(run(&model, &IDS, &mut zero), plain);

    // Added at positions 3.. only: the logits of positions 0..3 are untouched (causality).
    let mut some = Probes::capturing([Point::ResidPost(0)]);
    some.edit(
        Point::ResidPost(0),
        Edit::Add {
            vector: model.backend.upload(&v, &[d]).unwrap(),
            scale: 4.0,
            positions: Positions::Only(vec![3, 4, 5]),
        },
    )
    .unwrap();
    let mut base = Probes::capturing([Point::ResidPost(0)]);
    run(&model, &IDS, &mut base);
    let steered = run(&model, &IDS, &mut some);
    let vocab = model.config.vocab_size;
    assert_eq!(steered[..3 * vocab], plain[..3 * vocab]);
    assert_ne!(steered[3 * vocab..], plain[3 * vocab..]);
    let (a, b) =
        (&some.captured()[&Point::ResidPost(0)][0].data, &base.captured()[&Point::ResidPost(0)][0].data);
    for i in 0..IDS.len() * d {
        let want = b[i] + if i / d >= 3 { 4.0 * v[i % d] } else { 0.0 };
        assert!((a[i] - want).abs() <= 1e-6 * want.abs().max(1.0), "element {i}");
    }
}

fn ablation_leaves_the_residual_orthogonal_to_the_direction<B: Backend>(backend: B) {
    let (_d, model) = tiny(backend);
    let d = model.config.hidden_size;
    let mut u = Lcg(5).vec(d, 1.0);
    let norm = u.iter().map(|x| x * x).sum::<f32>().sqrt();
    u.iter_mut().for_each(|x| *x /= norm);
    let mut probes = Probes::capturing([Point::ResidMid(1)]);
    probes
        .edit(
            Point::ResidMid(1),
            Edit::Ablate { unit: model.backend.upload(&u, &[d]).unwrap(), positions: Positions::All },
        )
        .unwrap();
    run(&model, &IDS, &mut probes);
    let x = &probes.captured()[&Point::ResidMid(1)][0].data;
    for row in x.chunks(d) {
        let dot: f32 = row.iter().zip(&u).map(|(a, b)| a * b).sum();
        let size = row.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!(dot.abs() <= 1e-5 * size, "projection {dot} on a row of norm {size}");
    }
}

fn replacing_a_row_with_its_own_value_is_the_identity_and_another_row_is_not<B: Backend>(backend: B) {
    let (_d, model) = tiny(backend);
    let d = model.config.hidden_size;
    let mut cap = Probes::capturing([Point::ResidPost(0)]);
    let plain = run(&model, &IDS, &mut cap);
    let rows = cap.captured()[&Point::ResidPost(0)][0].data.clone();
    let mut same = Probes::none();
    let own = model.backend.upload(&rows[2 * d..3 * d], &[d]).unwrap();
    same.edit(Point::ResidPost(0), Edit::Replace { position: 2, row: own }).unwrap();
    assert_eq!(run(&model, &IDS, &mut same), plain);
    let mut other = Probes::none();
    let foreign = model.backend.upload(&rows[5 * d..6 * d], &[d]).unwrap();
    other.edit(Point::ResidPost(0), Edit::Replace { position: 2, row: foreign }).unwrap();
    let patched = run(&model, &IDS, &mut other);
    let vocab = model.config.vocab_size;
    assert_eq!(patched[..2 * vocab], plain[..2 * vocab]);
    assert_ne!(patched[2 * vocab..], plain[2 * vocab..]);
}

fn attention_probabilities_cannot_be_edited<B: Backend>(backend: B) {
    let (_d, model) = tiny(backend);
    let v = model.backend.upload(&[0.0; 4], &[4]).unwrap();
    let mut p = Probes::<B>::none();
    assert!(
        p.edit(Point::AttnProbs(0), Edit::Add { vector: v, scale: 1.0, positions: Positions::All }).is_err()
    );
}

fn decoding_with_the_cache_equals_one_long_forward<B: Backend>(backend: B) {
    let (_d, model) = tiny(backend);
    let all = run(&model, &IDS, &mut Probes::none());
    let vocab = model.config.vocab_size;
    let mut cache = model.new_cache(IDS.len()).unwrap();
    model.forward(&IDS[..4], 0, &mut cache, &mut Probes::none(), Logits::Last).unwrap();
    for (i, &id) in IDS.iter().enumerate().skip(4) {
        let row = model.forward(&[id], i, &mut cache, &mut Probes::none(), Logits::Last).unwrap();
        let row = model.backend.download(&row).unwrap();
        common::assert_rows_close("decode step", &row, &all[i * vocab..(i + 1) * vocab], vocab, 1e-5);
    }
}

/// A hook sees the values a capture sees, once per forward call, with the point's shape; a hook
/// that changes nothing leaves the pass bit for bit alone; one that zeroes an attention output
/// makes the next residual equal the previous one; one that changes `attn_probs` is an error.
fn hooks_see_each_point_once_and_their_changes_flow_on<B: Backend>(backend: B) {
    use std::sync::{Arc, Mutex};
    let (_d, model) = tiny(backend);
    let mut cap = Probes::capturing([Point::ResidPost(0), Point::AttnProbs(1)]);
    let plain = run(&model, &IDS, &mut cap);
    type Seen = Vec<(Point, Vec<usize>, Vec<f32>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut watch = Probes::none();
    for p in [Point::ResidPost(0), Point::AttnProbs(1)] {
        let seen = seen.clone();
        watch.hook(
            p,
            Box::new(move |point, start, shape, data| {
                assert_eq!(start, 0);
                seen.lock().unwrap().push((point, shape.to_vec(), data.to_vec()));
                Ok(false)
            }),
        );
    }
    assert_eq!(run(&model, &IDS, &mut watch), plain);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "each hooked point once");
    for (point, shape, data) in seen.iter() {
        let c = &cap.captured()[point][0];
        assert_eq!((shape, data), (&c.shape, &c.data), "{point}");
    }

    let kept: Arc<Mutex<Vec<Vec<f32>>>> = Arc::default();
    let mut zero = Probes::none();
    zero.hook(
        Point::AttnOut(1),
        Box::new(|_, _, _, data| {
            data.fill(0.0);
            Ok(true)
        }),
    );
    for p in [Point::ResidPre(1), Point::ResidMid(1)] {
        let kept = kept.clone();
        zero.hook(
            p,
            Box::new(move |_, _, _, data| {
                kept.lock().unwrap().push(data.to_vec());
                Ok(false)
            }),
        );
    }
    assert_ne!(run(&model, &IDS, &mut zero), plain);
    let kept = kept.lock().unwrap();
    assert_eq!(kept[0], kept[1], "resid_mid = resid_pre once attn_out is zero");

    let mut bad = Probes::none();
    bad.hook(
        Point::AttnProbs(0),
        Box::new(|_, _, _, data| {
            data[0] += 1.0;
            Ok(true)
        }),
    );
    let mut cache = model.new_cache(IDS.len()).unwrap();
    let e =
        model.forward(&IDS, 0, &mut cache, &mut bad, Logits::All).err().expect("attn_probs is observed only");
    assert!(e.to_string().contains("not changed"), "{e}");
}

/// `head_out` sums over heads to `attn_out`; zeroing one head's `attn_z` (ablating its hd basis
/// directions) zeroes its `head_out` and leaves the others' as they were; zeroing its `head_out`
/// by a hook gives the same `attn_out` as zeroing its `attn_z`.
fn heads_split_the_attention_output_and_one_can_be_ablated<B: Backend>(backend: B) {
    let (_d, model) = tiny(backend);
    let c = model.config.clone();
    let (t, h, hd, d) = (IDS.len(), c.n_heads, c.head_dim, c.hidden_size);
    let (layer, head) = (1, 2);
    let points = [Point::AttnZ(layer), Point::HeadOut(layer), Point::AttnOut(layer)];
    let close = |a: &[f32], b: &[f32], what: &str| {
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            // bf16 activations on CUDA: a few parts in a thousand of the largest value.
            assert!((x - y).abs() <= 1e-2 * scale, "{what}[{i}]: {x} vs {y} (scale {scale})");
        }
    };
    let mut plain = Probes::capturing(points);
    let logits = run(&model, &IDS, &mut plain);
    let cap = plain.captured();
    let (heads, attn_out) = (&cap[&points[1]][0].data, &cap[&points[2]][0].data);
    let sum = |heads: &[f32], skip: Option<usize>| -> Vec<f32> {
        let mut s = vec![0f32; t * d];
        for r in 0..t {
            for k in (0..h).filter(|&k| Some(k) != skip) {
                for j in 0..d {
                    s[r * d + j] += heads[(r * h + k) * d + j];
                }
            }
        }
        s
    };
    close(&sum(heads, None), attn_out, "sum of head_out vs attn_out");
    assert!(heads.iter().any(|&x| x != 0.0));
    // Capturing the per-head points changed nothing downstream.
    assert_eq!(run(&model, &IDS, &mut Probes::none()), logits);

    let mut ablate = Probes::capturing(points);
    for i in head * hd..(head + 1) * hd {
        let mut e = vec![0f32; h * hd];
        e[i] = 1.0;
        let unit = model.backend.upload(&e, &[h * hd]).unwrap();
        ablate.edit(Point::AttnZ(layer), Edit::Ablate { unit, positions: Positions::All }).unwrap();
    }
    let ablated = run(&model, &IDS, &mut ablate);
    assert_ne!(ablated, logits);
    let a = ablate.captured();
    let (z, heads_a, out_a) = (&a[&points[0]][0].data, &a[&points[1]][0].data, &a[&points[2]][0].data);
    for r in 0..t {
        assert!(z[(r * h + head) * hd..][..hd].iter().all(|&x| x == 0.0), "attn_z of the head, row {r}");
        assert!(
            heads_a[(r * h + head) * d..][..d].iter().all(|&x| x == 0.0),
            "head_out of the head, row {r}"
        );
    }
    close(&sum(heads_a, None), &sum(heads, Some(head)), "the other heads");
    close(out_a, &sum(heads, Some(head)), "attn_out without the head");

    let mut hook = Probes::capturing([Point::AttnOut(layer)]);
    hook.hook(
        Point::HeadOut(layer),
        Box::new(move |_, _, shape, data| {
            let d = shape[2];
            for r in 0..shape[0] {
                data[(r * shape[1] + head) * d..][..d].fill(0.0);
            }
            Ok(true)
        }),
    );
    let hooked = run(&model, &IDS, &mut hook);
    close(
        &hook.captured()[&Point::AttnOut(layer)][0].data,
        out_a,
        "attn_out, head_out hook vs attn_z ablation",
    );
    close(&hooked, &ablated, "logits, head_out hook vs attn_z ablation");
}

/// Two prompts that differ at one position: patching the whole clean input is exactly the clean
/// run (1), patching nothing exactly the corrupted run (0); in the sweep, layer 0's residual at the
/// differing position restores the clean answer and at every other position (where the two runs
/// agree) restores nothing — which also holds only if each run finds the corrupted run's cache
/// before its position.
#[allow(clippy::needless_range_loop)]
fn patching_the_one_differing_position_restores_the_clean_run<B: Backend>(backend: B) {
    let (_d, model) = tiny(backend);
    let (n, t) = (model.config.n_layers, IDS.len());
    let clean = IDS;
    let mut corrupted = IDS;
    corrupted[2] = 90;
    let metric = Metric::Logit(65);
    let mut p = Patcher::new(&model, &clean, &corrupted, metric, &[Site::ResidPre]).unwrap();
    assert!((p.clean - p.corrupted).abs() > 1e-3, "the prompts must differ in the metric");
    let all: Vec<(usize, Vec<f32>)> = (0..t).map(|q| (q, p.clean_row(Point::ResidPre(0), q))).collect();
    let (whole, nothing) =
        (p.run(0, Point::ResidPre(0), &all).unwrap(), p.run(0, Point::ResidPre(0), &[]).unwrap());
    assert_eq!((p.normalize(whole), p.normalize(nothing)), (1.0, 0.0));

    let sites = [Site::ResidPre, Site::AttnOut, Site::MlpOut, Site::Heads];
    let r = patch(&model, &clean, &corrupted, metric, &sites, None).unwrap();
    assert_eq!(r.sweeps.len(), 4);
    let resid = &r.sweeps[0].normalized;
    let tol = 2e-2;
    for q in 0..t {
        let want = if q == 2 { 1.0 } else { 0.0 };
        assert!((resid[0][q] - want).abs() <= tol, "resid_pre layer 0 position {q}: {}", resid[0][q]);
    }
    // Before the differing position nothing differs at any site.
    for s in &r.sweeps[..3] {
        for l in 0..n {
            for q in 0..2 {
                assert!(
                    s.normalized[l][q].abs() <= tol,
                    "{:?} layer {l} position {q}: {}",
                    s.site,
                    s.normalized[l][q]
                );
            }
        }
    }
    let heads = &r.sweeps[3].normalized;
    assert_eq!((heads.len(), heads[0].len()), (n, model.config.n_heads));
    // A sweep of one site alone: no later run of another site rewrites the cache behind it.
    let alone = patch(&model, &clean, &corrupted, metric, &[Site::ResidPre], None).unwrap();
    for l in 0..n {
        for q in 0..t {
            let (a, b) = (alone.sweeps[0].normalized[l][q], resid[l][q]);
            assert!((a - b).abs() <= tol, "resid_pre alone, layer {l} position {q}: {a} vs {b}");
        }
    }

    // Every cell equals its definition: a whole corrupted forward pass, on a fresh cache, with that
    // one piece replaced by the clean run's.
    let points = |l: usize| [Point::ResidPre(l), Point::AttnOut(l), Point::MlpOut(l), Point::AttnZ(l)];
    let all_points: Vec<Point> = (0..n).flat_map(points).collect();
    let clean_cap = scalpel::interp::capture::capture(&model, &clean, all_points.clone()).unwrap();
    let corrupted_cap = scalpel::interp::capture::capture(&model, &corrupted, all_points).unwrap();
    let row = |cap: &std::collections::BTreeMap<Point, scalpel::probe::Captured>, p: Point, q: usize| {
        scalpel::interp::capture::row(&cap[&p], q).to_vec()
    };
    let naive = |edits: Vec<(Point, usize, Vec<f32>)>| -> f32 {
        let mut probes = Probes::none();
        for (point, position, values) in edits {
            let row = model.backend.upload(&values, &[values.len()]).unwrap();
            probes.edit(point, Edit::Replace { position, row }).unwrap();
        }
        let mut cache = model.new_cache(t).unwrap();
        let logits = model.forward(&corrupted, 0, &mut cache, &mut probes, Logits::Last).unwrap();
        p.normalize(metric.of(&model.backend.download(&logits).unwrap()))
    };
    for (s, sweep) in r.sweeps[..3].iter().enumerate() {
        for l in 0..n {
            for q in 0..t {
                let point = points(l)[s];
                let want = naive(vec![(point, q, row(&clean_cap, point, q))]);
                let got = sweep.normalized[l][q];
                assert!(
                    (got - want).abs() <= tol,
                    "{:?} layer {l} position {q}: {got} vs {want}",
                    sweep.site
                );
            }
        }
    }
    let hd = model.config.head_dim;
    for l in 0..n {
        for h in 0..model.config.n_heads {
            let edits = (0..t)
                .map(|q| {
                    let mut z = row(&corrupted_cap, Point::AttnZ(l), q);
                    z[h * hd..(h + 1) * hd]
                        .copy_from_slice(&row(&clean_cap, Point::AttnZ(l), q)[h * hd..(h + 1) * hd]);
                    (Point::AttnZ(l), q, z)
                })
                .collect();
            let want = naive(edits);
            assert!((heads[l][h] - want).abs() <= tol, "head {h} of layer {l}: {} vs {want}", heads[l][h]);
        }
    }
}

/// `top-examples`' scan on every device: with one window per document, the kept examples are the
/// best positions by each probe's definition (a neuron's mlp_post, the residual's projection on a
/// unit direction, a head's attention mass on a token), best first; with shorter windows the
/// documents are split and every example still names its own token.
fn top_examples_are_the_best_scores_by_their_definition<B: Backend>(backend: B) {
    use scalpel::interp::examples::{Probe, TopK, scan_document};
    let (_d, model) = tiny(backend);
    let c = model.config.clone();
    let mut rng = Lcg(11);
    let docs: Vec<Vec<u32>> =
        (0..4).map(|i| (0..7 + i).map(|_| 40 + (rng.next_f32().abs() * 60.0) as u32).collect()).collect();
    let unit = {
        let v = rng.vec(c.hidden_size, 1.0);
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let key = docs[0][2];
    let probes = [
        Probe::Neuron { layer: 1, neuron: 3 },
        Probe::Direction { layer: 0, unit: unit.clone() },
        Probe::HeadToToken { layer: 1, head: 1, key },
    ];
    let none = std::collections::HashSet::new();
    for probe in &probes {
        let mut top = TopK::new(5);
        let mut all: Vec<(f32, usize, usize)> = Vec::new();
        for (i, d) in docs.iter().enumerate() {
            scan_document(&model, probe, d, &[], &none, i, 64, 2, false, &mut top).unwrap();
            let mut p = Probes::capturing([probe.point()]);
            run(&model, d, &mut p);
            let cap = &p.captured()[&probe.point()][0];
            for q in 1..d.len() {
                let s = match probe {
                    Probe::Neuron { neuron, .. } => cap.data[q * c.intermediate_size + neuron],
                    Probe::Direction { unit, .. } => cap.data[q * c.hidden_size..][..c.hidden_size]
                        .iter()
                        .zip(unit)
                        .map(|(a, b)| a * b)
                        .sum(),
                    Probe::HeadToToken { head, key, .. } => (0..=q)
                        .filter(|&k| d[k] == *key)
                        .map(|k| cap.data[(head * d.len() + q) * d.len() + k])
                        .sum(),
                };
                all.push((s, i, q));
            }
        }
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        assert_eq!(top.examples.len(), 5);
        for (e, want) in top.examples.iter().zip(&all) {
            let tol = 1e-4 * (1.0 + want.0.abs());
            assert!((e.score - want.0).abs() <= tol, "{probe:?}: {} vs {want:?}", e.score);
            assert_eq!(e.ids[e.focus], docs[e.document][e.position], "the example names its own token");
        }
        assert!(
            top.examples[0].score.is_finite() && top.examples.windows(2).all(|w| w[0].score >= w[1].score)
        );

        // Windows of 4 split every document; positions stay the document's own.
        let mut split = TopK::new(5);
        for (i, d) in docs.iter().enumerate() {
            scan_document(&model, probe, d, &[], &none, i, 4, 1, true, &mut split).unwrap();
        }
        for e in &split.examples {
            assert_eq!(e.ids[e.focus], docs[e.document][e.position]);
        }
    }
}
