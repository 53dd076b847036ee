//! Every CUDA kernel launcher against its CPU twin — one table of cases, one test body, run on
//! every device: the mock device under three schedules (forward, reverse, seeded random) in every
//! `cargo test`, and the GPU in scripts/gpu_check.sh (`kernels --device cuda`) or wherever one is
//! present. Inputs are fresh random values (never zeros; the seed is printed, SCALPEL_TEST_SEED
//! repeats a run) over several shapes (odd sizes, GQA ratios 1/3/4/8, head dims 64/128/256 and an
//! odd one, sequences past one tile and past the decode split); tolerances scale with the values
//! (per-row relative error, bf16-sized where the kernel rounds to bf16); NaN never passes; every
//! activation is poisoned before each launch so an element left unwritten fails.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use scalpel::model::stored::Stored;

use scalpel::backend::cpu::{Cpu, CpuCache, CpuStep, CpuTensor};
use scalpel::backend::cuda::{AttnKernel, Cuda, CudaCache, CudaStep, CudaTensor, Schedule};
use scalpel::backend::{AttnParams, Backend, PAGE, SeqSpan, pages_for};
use scalpel::model::config::{Activation, NormKind};
use scalpel::sample::{SamplingParams, pick};

use common::devices::{self, Target};
use common::rel_l2;
use common::tiny::Lcg;

/// bf16 keeps 8 significant bits: one rounding is ≤ 2^-9 relative; a row of them, accumulated
/// in f32, stays well under this.
const BF16_ROW: f64 = 1e-2;

static SEED: AtomicU64 = AtomicU64::new(0);

/// `n` values in (-scale, scale), from the run's seed and a per-call salt.
fn rand(salt: u64, n: usize, scale: f32) -> Vec<f32> {
    let seed = SEED.load(Ordering::Relaxed);
    Lcg((seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1).vec(n, scale)
}

fn bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect()
}

fn rows_close(what: &str, got: &[f32], want: &[f32], row: usize, tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (r, (a, b)) in got.chunks(row).zip(want.chunks(row)).enumerate() {
        let e = rel_l2(a, b);
        assert!(e <= tol, "{what}: row {r} relative error {e:e} > {tol:e} (NaN = unwritten or garbage)");
    }
}

/// The mean signed relative error over all values: a bias every row shares (a norm dividing by
/// n − 1, a rounding that always goes one way) stays under a per-row bound but not under this.
fn mean_error_small(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let scale = want.iter().map(|w| (*w as f64).abs()).sum::<f64>() / want.len().max(1) as f64;
    let bias =
        got.iter().zip(want).map(|(g, w)| *g as f64 - *w as f64).sum::<f64>() / want.len().max(1) as f64;
    assert!(
        bias.is_finite() && bias.abs() <= tol * 0.1 * scale.max(1e-30),
        "{what}: mean signed error {bias:e} against a mean magnitude {scale:e}"
    );
}

struct Ctx {
    gpu: Cuda,
    cpu: Cpu,
}

impl Ctx {
    fn up(&self, data: &[f32], shape: &[usize]) -> CudaTensor {
        self.gpu.upload(data, shape).unwrap()
    }

    fn down(&self, t: &CudaTensor) -> Vec<f32> {
        self.gpu.download(t).unwrap()
    }

    fn cpu_t(&self, data: &[f32], shape: &[usize]) -> CpuTensor {
        CpuTensor::new(data.to_vec(), shape).unwrap()
    }
}

fn embed(c: &Ctx) {
    for (vocab, d, scale) in [(1000, 77, None), (4099, 640, Some(25.3f32)), (50, 4096, None)] {
        let table = bf16(&rand(1, vocab * d, 1.0));
        let ids: Vec<u32> = (0..13).map(|i| (i * 7919 % vocab) as u32).collect();
        let g = c.gpu.weight(Stored::from_f32(table.clone(), &[vocab, d])).unwrap();
        let out = c.gpu.embed(&g, &c.gpu.step(&ids, 0).unwrap(), scale).unwrap();
        let want = c.cpu.embed(&c.cpu_t(&table, &[vocab, d]), &c.cpu.step(&ids, 0).unwrap(), scale).unwrap();
        rows_close(&format!("embed {vocab}×{d}"), &c.down(&out), &want.data, d, 1e-6);
    }
}

fn rms_norm(c: &Ctx) {
    for (rows, n, group) in [(1, 576, 576), (7, 640, 640), (3, 4096, 4096), (5, 9 * 64, 64), (2, 1031, 1031)]
    {
        for kind in [NormKind::Plain, NormKind::OnePlus] {
            let x = rand(rows as u64, rows * n, 3.0);
            let w: Vec<f32> = rand(7, group, 0.5).iter().map(|v| 1.0 + v).collect();
            let want = c.cpu.rms_norm(&c.cpu_t(&x, &[rows, n]), &c.cpu_t(&w, &[group]), 1e-5, kind).unwrap();
            let gw = c.gpu.weight(Stored::from_f32(w.clone(), &[group])).unwrap();
            let out = c.gpu.rms_norm(&c.up(&x, &[rows, n]), &gw, 1e-5, kind).unwrap();
            rows_close(
                &format!("rms_norm {rows}×{n}/{group} {kind:?}"),
                &c.down(&out),
                &want.data,
                group,
                BF16_ROW,
            );
        }
    }
}

fn add_rms_norm(c: &Ctx) {
    for (rows, n) in [(1, 576), (9, 2048), (4, 3072)] {
        let x = rand(11, rows * n, 20.0);
        let d = rand(12, rows * n, 1.0);
        let w = rand(13, n, 1.0);
        let mut cx = c.cpu_t(&x, &[rows, n]);
        let want = c
            .cpu
            .add_rms_norm(&mut cx, &c.cpu_t(&d, &[rows, n]), &c.cpu_t(&w, &[n]), 1e-6, NormKind::OnePlus)
            .unwrap();
        let mut gx = c.up(&x, &[rows, n]);
        let gw = c.gpu.weight(Stored::from_f32(w.clone(), &[n])).unwrap();
        let out = c.gpu.add_rms_norm(&mut gx, &c.up(&d, &[rows, n]), &gw, 1e-6, NormKind::OnePlus).unwrap();
        rows_close("add_rms_norm: the updated residual", &c.down(&gx), &cx.data, n, 1e-7);
        rows_close("add_rms_norm: the norm", &c.down(&out), &want.data, n, BF16_ROW);
    }
}

fn matmul(c: &Ctx) {
    for (m, k, n) in [(1, 576, 1536), (7, 640, 2048), (33, 1536, 576), (130, 1024, 769), (1, 3072, 8192)] {
        let x = bf16(&rand(m as u64, m * k, 1.0));
        let w = bf16(&rand(n as u64, n * k, 0.05));
        let want = c.cpu.matmul(&c.cpu_t(&x, &[m, k]), &c.cpu_t(&w, &[n, k])).unwrap();
        let gw = c.gpu.weight(Stored::from_f32(w.clone(), &[n, k])).unwrap();
        // f32 input (cast on the device) and a bf16 one (from a norm) give the same product.
        let out = c.gpu.matmul(&c.up(&x, &[m, k]), &gw).unwrap();
        rows_close(&format!("matmul [{m}×{k}]·[{n}×{k}]ᵀ"), &c.down(&out), &want.data, n, 1e-4);
    }
}

/// RoPE and the cache write of the same q, k and v (one row per token of the steps) on the CPU twin
/// and the device, each into its own cache over its own step; k goes to the device as bf16 where
/// `k_bf16` (Gemma's k comes out of a norm, its v out of a product: mixed dtypes). Returns the
/// rotated q of (the device, the CPU).
#[allow(clippy::too_many_arguments)]
fn rope_kv_on_both(
    c: &Ctx,
    (q, k, v): (&[f32], &[f32], &[f32]),
    hd: usize,
    inv: &[f32],
    (ccache, cstep): (&mut CpuCache, &CpuStep),
    (gcache, gstep): (&mut CudaCache, &CudaStep),
    k_bf16: bool,
) -> (Vec<f32>, Vec<f32>) {
    let t = cstep.ids.len();
    let (qrow, row) = (q.len() / t, k.len() / t);
    let mut cq = c.cpu_t(q, &[t, qrow]);
    let cinv = c.cpu_t(inv, &[hd / 2]);
    c.cpu
        .rope_kv(&mut cq, &c.cpu_t(k, &[t, row]), &c.cpu_t(v, &[t, row]), ccache, 0, cstep, hd, &cinv)
        .unwrap();
    let mut gq = c.up(q, &[t, qrow]);
    let ginv = c.gpu.weight(Stored::from_f32(inv.to_vec(), &[hd / 2])).unwrap();
    let gk = c.up(k, &[t, row]);
    let gk = if k_bf16 { c.gpu.to_bf16(&gk).unwrap() } else { gk };
    c.gpu.rope_kv(&mut gq, &gk, &c.up(v, &[t, row]), gcache, 0, gstep, hd, &ginv).unwrap();
    (c.down(&gq), cq.data)
}

fn rope_kv(c: &Ctx) {
    for (t, start, h, kvh, hd) in
        [(1, 0, 9, 3, 64), (5, 100, 4, 1, 256), (17, 3000, 8, 8, 128), (3, 7, 24, 8, 128)]
    {
        let cap = start + t + 3;
        let inv: Vec<f32> = scalpel::model::config::default_inv_freq(10000.0, hd);
        let q = rand(21, t * h * hd, 1.0);
        let k = rand(22, t * kvh * hd, 1.0);
        let v = rand(23, t * kvh * hd, 1.0);
        let mut ccache: CpuCache = c.cpu.new_cache(1, kvh, hd, cap).unwrap();
        let cstep = c.cpu.step(&vec![0; t], start).unwrap();
        let mut gcache = c.gpu.new_cache(1, kvh, hd, cap).unwrap();
        let gstep = c.gpu.step(&vec![0; t], start).unwrap();
        let (gq, cq) = rope_kv_on_both(
            c,
            (&q, &k, &v),
            hd,
            &inv,
            (&mut ccache, &cstep),
            (&mut gcache, &gstep),
            hd == 256,
        );
        let what = format!("rope_kv t={t} start={start} heads {h}/{kvh} hd {hd}");
        rows_close(&format!("{what}: q"), &gq, &cq, hd, 1e-5);
        let (gk, gv) = c.gpu.read_cache(&gcache, 0, cap).unwrap();
        let row = kvh * hd;
        let span = start * row..(start + t) * row;
        rows_close(&format!("{what}: k cache"), &gk[span.clone()], &ccache.k[0][span.clone()], hd, BF16_ROW);
        rows_close(&format!("{what}: v cache"), &gv[span.clone()], &ccache.v[0][span], hd, BF16_ROW);
    }
}

/// (query rows, start position, heads, KV heads, head dim, window, softcap)
type AttnCase = (usize, usize, usize, usize, usize, Option<usize>, Option<f32>);

/// Both kernels (and the dispatcher) against the CPU on the same bf16 cache and queries.
fn attention(c: &Ctx) {
    let cases: &[AttnCase] = &[
        (1, 0, 9, 3, 64, None, None),
        (1, 1000, 8, 1, 128, None, None), // decode split along 1001 keys
        (1, 700, 4, 1, 256, Some(512), None),
        (1, 300, 6, 2, 80, None, Some(50.0)), // a head dim without a tensor-core kernel
        (7, 0, 9, 3, 64, None, None),
        (16, 0, 4, 4, 64, None, None),
        (69, 0, 8, 2, 128, None, None), // past one 64-row tile
        (130, 40, 16, 2, 64, Some(33), None),
        (40, 0, 4, 1, 256, None, Some(30.0)),
        (27, 0, 4, 1, 256, Some(8), None), // Gemma's head dim with a window shorter than the prompt
        (1, 26, 4, 1, 256, Some(8), None),
        (65, 100, 24, 8, 128, None, None),
    ];
    for (i, &(t, start, h, kvh, hd, window, softcap)) in cases.iter().enumerate() {
        let s = start + t;
        let cap = s + 5;
        let p = AttnParams {
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            window,
            softcap,
        };
        let q = bf16(&rand(100 + i as u64, t * h * hd, 2.0));
        let k = bf16(&rand(200 + i as u64, s * kvh * hd, 2.0));
        let v = bf16(&rand(300 + i as u64, s * kvh * hd, 1.0));
        let mut ccache = c.cpu.new_cache(1, kvh, hd, cap).unwrap();
        ccache.k[0][..k.len()].copy_from_slice(&k);
        ccache.v[0][..v.len()].copy_from_slice(&v);
        let cstep = c.cpu.step(&vec![0; t], start).unwrap();
        let (want, want_lse) = c.cpu.attention(&c.cpu_t(&q, &[t, h * hd]), &ccache, 0, &cstep, &p).unwrap();
        let want_probs =
            c.cpu.attn_probs(&c.cpu_t(&q, &[t, h * hd]), &ccache, 0, &cstep, 0, &p, &want_lse).unwrap();

        let mut gcache = c.gpu.new_cache(1, kvh, hd, cap).unwrap();
        c.gpu.write_cache(&mut gcache, 0, &k, &v).unwrap();
        let gstep = c.gpu.step(&vec![0; t], start).unwrap();
        let gq = c.up(&q, &[t, h * hd]);
        let tensor_cores = matches!(hd, 64 | 128 | 256);
        let kernels: Vec<AttnKernel> = if tensor_cores {
            vec![AttnKernel::Auto, AttnKernel::Rows, AttnKernel::TensorCores]
        } else {
            vec![AttnKernel::Auto, AttnKernel::Rows]
        };
        for kern in kernels {
            let what = format!(
                "attention {kern:?} t={t} start={start} heads {h}/{kvh} hd {hd} window {window:?} softcap {softcap:?}"
            );
            let (out, lse) = c.gpu.attention_with(kern, &gq, &gcache, 0, &gstep, &p).unwrap();
            rows_close(&format!("{what}: output"), &c.down(&out), &want.data, hd, BF16_ROW);
            let got_lse = c.down(&lse);
            for (j, (a, b)) in got_lse.iter().zip(&want_lse.data).enumerate() {
                assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{what}: lse[{j}] {a} vs {b}");
            }
            if kern == AttnKernel::Auto {
                let probs = c.gpu.attn_probs(&gq, &gcache, 0, &gstep, 0, &p, &lse).unwrap();
                rows_close(&format!("{what}: probabilities"), &c.down(&probs), &want_probs.data, s, 1e-3);
            }
        }
    }
}

/// A prompt longer than a grid's y dimension holds (65535): the row kernel puts query rows in x.
/// One head of two values and a window of three keys keep it quick on the mock.
fn attention_past_the_grid_y_limit(c: &Ctx) {
    let (t, hd) = (65_600usize, 2usize);
    let p =
        AttnParams { n_heads: 1, n_kv_heads: 1, head_dim: hd, scale: 0.7, window: Some(3), softcap: None };
    let q = bf16(&rand(401, t * hd, 2.0));
    let k = bf16(&rand(402, t * hd, 2.0));
    let v = bf16(&rand(403, t * hd, 1.0));
    let mut ccache = c.cpu.new_cache(1, 1, hd, t).unwrap();
    ccache.k[0].copy_from_slice(&k);
    ccache.v[0].copy_from_slice(&v);
    let cstep = c.cpu.step(&vec![0; t], 0).unwrap();
    let (want, want_lse) = c.cpu.attention(&c.cpu_t(&q, &[t, hd]), &ccache, 0, &cstep, &p).unwrap();
    let mut gcache = c.gpu.new_cache(1, 1, hd, t).unwrap();
    c.gpu.write_cache(&mut gcache, 0, &k, &v).unwrap();
    let gstep = c.gpu.step(&vec![0; t], 0).unwrap();
    let (out, lse) =
        c.gpu.attention_with(AttnKernel::Rows, &c.up(&q, &[t, hd]), &gcache, 0, &gstep, &p).unwrap();
    // Rows of two values: compare in groups of 64 rows, so one bf16 rounding is not a whole row.
    rows_close(&format!("attention rows t={t}: output"), &c.down(&out), &want.data, 128, BF16_ROW);
    rows_close(&format!("attention rows t={t}: lse"), &c.down(&lse), &want_lse.data, 128, 1e-4);
}

/// A batch's sequences as (rows in this step, position of the first): prompt chunks, single
/// decode rows, a sequence of length 1, and chunks that continue what the pages hold.
type Batch = &'static [(usize, usize)];

/// Each sequence's page table: pages of a pool of `pages`, shuffled, so no sequence's pages are in
/// order and neighbours in the pool belong to different sequences.
fn page_tables(seqs: Batch, salt: u64) -> (Vec<SeqSpan>, usize) {
    let need: Vec<usize> = seqs.iter().map(|&(n, start)| pages_for(start + n)).collect();
    let total: usize = need.iter().sum::<usize>() + 3;
    let order = rand(salt, total, 1.0);
    let mut pool: Vec<u32> = (0..total as u32).collect();
    pool.sort_by(|&a, &b| order[a as usize].total_cmp(&order[b as usize]));
    let mut row = 0;
    let spans = seqs
        .iter()
        .zip(&need)
        .map(|(&(n, start), &k)| {
            let pages = pool.drain(..k).collect();
            let s = SeqSpan { row, len: n, start, pages };
            row += n;
            s
        })
        .collect();
    (spans, total)
}

/// Keys and values for every position each sequence's pages hold after this step, written into
/// the pool slots its page table names ([pool positions, kv_heads·head_dim]).
fn paged_kv(spans: &[SeqSpan], pages: usize, row: usize, salt: u64) -> (Vec<f32>, Vec<f32>) {
    let mut k = bf16(&rand(salt, pages * PAGE * row, 2.0));
    let mut v = bf16(&rand(salt + 1, pages * PAGE * row, 1.0));
    // Slots no sequence owns hold NaN: a kernel that reads past its own pages fails.
    let mut owned = vec![false; pages * PAGE];
    for s in spans {
        for pos in 0..s.end() {
            owned[s.pages[pos / PAGE] as usize * PAGE + pos % PAGE] = true;
        }
    }
    for (slot, _) in owned.iter().enumerate().filter(|(_, o)| !**o) {
        k[slot * row..(slot + 1) * row].fill(f32::NAN);
        v[slot * row..(slot + 1) * row].fill(f32::NAN);
    }
    (k, v)
}

/// (the batch, heads, KV heads, head dim, window, softcap)
type PagedCase = (Batch, usize, usize, usize, Option<usize>, Option<f32>);

/// Attention over ragged sequences in shuffled pages, every kernel against the CPU twin: each row
/// sees only its own sequence's keys; every sequence's probabilities come back on their own.
fn paged_attention(c: &Ctx) {
    let cases: &[PagedCase] = &[
        (&[(1, 0), (1, 15), (1, 16), (1, 40)], 9, 3, 64, None, None), // decode rows at page edges
        (&[(1, 700), (1, 3), (1, 1000)], 8, 1, 128, None, None),      // decode split along the keys
        (&[(20, 0), (1, 33), (70, 5), (1, 0)], 4, 2, 64, None, None), // prefill beside decode
        (&[(17, 16), (3, 29)], 4, 1, 256, Some(8), None),             // a window across pages
        (&[(33, 0), (16, 100)], 6, 2, 128, None, Some(30.0)),
        (&[(5, 2), (1, 64), (9, 0)], 6, 2, 80, None, None), // a head dim without tensor cores
    ];
    for (i, &(seqs, h, kvh, hd, window, softcap)) in cases.iter().enumerate() {
        let salt = 500 + 10 * i as u64;
        let (spans, pages) = page_tables(seqs, salt);
        let t: usize = seqs.iter().map(|s| s.0).sum();
        let row = kvh * hd;
        let p = AttnParams {
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            window,
            softcap,
        };
        let q = bf16(&rand(salt + 2, t * h * hd, 2.0));
        let (k, v) = paged_kv(&spans, pages, row, salt + 3);
        let ids = vec![0; t];
        let mut ccache = c.cpu.new_cache(1, kvh, hd, pages * PAGE).unwrap();
        ccache.k[0].copy_from_slice(&k);
        ccache.v[0].copy_from_slice(&v);
        let cstep = c.cpu.batch(&ids, &spans).unwrap();
        let cq = c.cpu_t(&q, &[t, h * hd]);
        let (want, want_lse) = c.cpu.attention(&cq, &ccache, 0, &cstep, &p).unwrap();
        let mut gcache = c.gpu.new_cache(1, kvh, hd, pages * PAGE).unwrap();
        c.gpu.write_cache(&mut gcache, 0, &k, &v).unwrap();
        let gstep = c.gpu.batch(&ids, &spans).unwrap();
        let gq = c.up(&q, &[t, h * hd]);
        let mut kernels = vec![AttnKernel::Auto, AttnKernel::Rows];
        if matches!(hd, 64 | 128 | 256) {
            kernels.push(AttnKernel::TensorCores);
        }
        for kern in kernels {
            let what = format!("paged attention {kern:?} {seqs:?} heads {h}/{kvh} hd {hd} window {window:?}");
            let (out, lse) = c.gpu.attention_with(kern, &gq, &gcache, 0, &gstep, &p).unwrap();
            rows_close(&format!("{what}: output"), &c.down(&out), &want.data, hd, BF16_ROW);
            mean_error_small(&format!("{what}: output"), &c.down(&out), &want.data, BF16_ROW);
            let got_lse = c.down(&lse);
            for (j, (a, b)) in got_lse.iter().zip(&want_lse.data).enumerate() {
                assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{what}: lse[{j}] {a} vs {b}");
            }
            if kern != AttnKernel::Auto {
                continue;
            }
            for (s, span) in spans.iter().enumerate() {
                let wp = c.cpu.attn_probs(&cq, &ccache, 0, &cstep, s, &p, &want_lse).unwrap();
                assert_eq!(wp.shape, [h, span.len, span.end()], "{what}: probabilities of sequence {s}");
                let gp = c.gpu.attn_probs(&gq, &gcache, 0, &gstep, s, &p, &lse).unwrap();
                rows_close(
                    &format!("{what}: probabilities of sequence {s}"),
                    &c.down(&gp),
                    &wp.data,
                    span.end(),
                    1e-3,
                );
            }
        }
        // Each sequence alone, in a cache of its own with its positions in order, gives the same
        // rows: the CPU twin's batch is the sum of its solo runs.
        for span in &spans {
            let mut solo = c.cpu.new_cache(1, kvh, hd, span.end()).unwrap();
            for pos in 0..span.end() {
                let from = (span.pages[pos / PAGE] as usize * PAGE + pos % PAGE) * row;
                solo.k[0][pos * row..(pos + 1) * row].copy_from_slice(&k[from..from + row]);
                solo.v[0][pos * row..(pos + 1) * row].copy_from_slice(&v[from..from + row]);
            }
            let qs = c.cpu_t(&q[span.row * h * hd..(span.row + span.len) * h * hd], &[span.len, h * hd]);
            let (alone, _) = c
                .cpu
                .attention(&qs, &solo, 0, &c.cpu.step(&vec![0; span.len], span.start).unwrap(), &p)
                .unwrap();
            let mine = &want.data[span.row * h * hd..(span.row + span.len) * h * hd];
            assert_eq!(alone.data, mine, "cpu: sequence at rows {}.. differs from itself alone", span.row);
        }
    }
}

/// RoPE and the paged cache write for a ragged batch in shuffled pages: q rotated at each row's
/// own position, k and v at the slot its page table names, nothing else written.
fn paged_rope_kv(c: &Ctx) {
    let cases: &[(Batch, usize, usize, usize)] =
        &[(&[(1, 15), (7, 0), (1, 16), (20, 33)], 9, 3, 64), (&[(3, 100), (1, 0)], 4, 1, 256)];
    for (i, &(seqs, h, kvh, hd)) in cases.iter().enumerate() {
        let salt = 600 + 10 * i as u64;
        let (spans, pages) = page_tables(seqs, salt);
        let t: usize = seqs.iter().map(|s| s.0).sum();
        let row = kvh * hd;
        let inv: Vec<f32> = scalpel::model::config::default_inv_freq(10000.0, hd);
        let (q, k, v) =
            (rand(salt + 1, t * h * hd, 1.0), rand(salt + 2, t * row, 1.0), rand(salt + 3, t * row, 1.0));
        let ids = vec![0; t];
        let mut ccache = c.cpu.new_cache(1, kvh, hd, pages * PAGE).unwrap();
        let sentinel = bf16(&rand(salt + 4, pages * PAGE * row, 1.0));
        ccache.k[0].copy_from_slice(&sentinel);
        ccache.v[0].copy_from_slice(&sentinel);
        let cstep = c.cpu.batch(&ids, &spans).unwrap();
        let mut gcache = c.gpu.new_cache(1, kvh, hd, pages * PAGE).unwrap();
        c.gpu.write_cache(&mut gcache, 0, &sentinel, &sentinel).unwrap();
        let gstep = c.gpu.batch(&ids, &spans).unwrap();
        let (gq, cq) =
            rope_kv_on_both(c, (&q, &k, &v), hd, &inv, (&mut ccache, &cstep), (&mut gcache, &gstep), false);
        let what = format!("paged rope_kv {seqs:?} heads {h}/{kvh} hd {hd}");
        rows_close(&format!("{what}: q"), &gq, &cq, hd, 1e-5);
        let (gk, gv) = c.gpu.read_cache(&gcache, 0, pages * PAGE).unwrap();
        // Every slot: the written ones against the twin, the rest still the sentinel.
        rows_close(&format!("{what}: k pool"), &gk, &ccache.k[0], row, BF16_ROW);
        rows_close(&format!("{what}: v pool"), &gv, &ccache.v[0], row, BF16_ROW);
        let written: usize =
            ccache.k[0].chunks(row).zip(sentinel.chunks(row)).filter(|(a, b)| a != b).count();
        assert_eq!(written, t, "{what}: the twin wrote one slot per row");
    }
}

fn glu(c: &Ctx) {
    for n in [1536usize, 2 * 2047, 8192 * 3] {
        for act in [Activation::Silu, Activation::GeluTanh] {
            let g = rand(31, n, 4.0);
            let u = rand(32, n, 2.0);
            let want = c.cpu.glu(&c.cpu_t(&g, &[1, n]), &c.cpu_t(&u, &[1, n]), act).unwrap();
            let out = c.gpu.glu(&c.up(&g, &[1, n]), &c.up(&u, &[1, n]), act).unwrap();
            rows_close(&format!("glu {n} {act:?}"), &c.down(&out), &want.data, 512.min(n), BF16_ROW);
        }
    }
}

fn small_ops(c: &Ctx) {
    let (rows, n) = (6, 1023);
    let x = rand(41, rows * n, 10.0);
    let y = rand(42, rows * n, 1.0);
    // add
    let mut gx = c.up(&x, &[rows, n]);
    c.gpu.add_assign(&mut gx, &c.up(&y, &[rows, n])).unwrap();
    let mut cx = c.cpu_t(&x, &[rows, n]);
    c.cpu.add_assign(&mut cx, &c.cpu_t(&y, &[rows, n])).unwrap();
    rows_close("add", &c.down(&gx), &cx.data, n, 1e-7);
    // softcap
    let mut gs = c.up(&x, &[rows, n]);
    c.gpu.softcap(&mut gs, 3.0).unwrap();
    let mut cs = c.cpu_t(&x, &[rows, n]);
    c.cpu.softcap(&mut cs, 3.0).unwrap();
    rows_close("softcap", &c.down(&gs), &cs.data, n, 1e-6);
    // last row
    let last = c.gpu.last_row(&c.up(&x, &[rows, n])).unwrap();
    rows_close("last_row", &c.down(&last), &x[(rows - 1) * n..], n, 0.0);
    // cosine search
    let table = bf16(&rand(43, 777 * 96, 1.0));
    let v = rand(44, 96, 1.0);
    let want = c.cpu.cosine_rows(&c.cpu_t(&table, &[777, 96]), &c.cpu_t(&v, &[96])).unwrap();
    let got = c
        .gpu
        .cosine_rows(&c.gpu.weight(Stored::from_f32(table.clone(), &[777, 96])).unwrap(), &c.up(&v, &[96]))
        .unwrap();
    rows_close("cosine_rows", &c.down(&got), &want.data, 777, 1e-5);
}

fn interventions(c: &Ctx) {
    let (rows, n) = (5, 576);
    let x = rand(51, rows * n, 5.0);
    let v = rand(52, n, 1.0);
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    let u: Vec<f32> = v.iter().map(|a| a / norm).collect();
    for sel in [vec![0, 1, 2, 3, 4], vec![1, 3]] {
        let mut g = c.up(&x, &[rows, n]);
        c.gpu.add_rows(&mut g, &c.up(&v, &[n]), 2.5, &sel).unwrap();
        let mut w = c.cpu_t(&x, &[rows, n]);
        c.cpu.add_rows(&mut w, &c.cpu_t(&v, &[n]), 2.5, &sel).unwrap();
        rows_close(&format!("add_rows {sel:?}"), &c.down(&g), &w.data, n, 1e-7);

        let mut g = c.up(&x, &[rows, n]);
        c.gpu.ablate_rows(&mut g, &c.up(&u, &[n]), &sel).unwrap();
        let mut w = c.cpu_t(&x, &[rows, n]);
        c.cpu.ablate_rows(&mut w, &c.cpu_t(&u, &[n]), &sel).unwrap();
        let got = c.down(&g);
        for (r, (a, b)) in got.chunks(n).zip(w.data.chunks(n)).enumerate() {
            // Near-orthogonal rows are small: compare against the row's original size.
            let scale = x[r * n..(r + 1) * n].iter().map(|v| (v * v) as f64).sum::<f64>().sqrt();
            let err = a.iter().zip(b).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>().sqrt();
            assert!(err <= 1e-5 * scale, "ablate_rows {sel:?} row {r}: error {err} vs row size {scale}");
        }
    }
    let mut g = c.up(&x, &[rows, n]);
    c.gpu.set_row(&mut g, 3, &c.up(&v, &[n])).unwrap();
    let mut w = c.cpu_t(&x, &[rows, n]);
    c.cpu.set_row(&mut w, 3, &c.cpu_t(&v, &[n])).unwrap();
    rows_close("set_row", &c.down(&g), &w.data, n, 0.0);
}

fn sample(c: &Ctx) {
    for vocab in [49152usize, 262144, 1000] {
        let logits = rand(61, vocab, 6.0);
        let t = c.up(&logits, &[1, vocab]);
        let greedy = SamplingParams::default();
        assert_eq!(
            c.gpu.sample(&t, &greedy, 0.0).unwrap(),
            Some(pick(&logits, &greedy, 0.0).unwrap()),
            "greedy {vocab}"
        );
        for params in [
            SamplingParams { temperature: 1.0, ..Default::default() },
            SamplingParams { temperature: 0.7, top_k: Some(40), ..Default::default() },
            SamplingParams { temperature: 1.3, top_p: Some(0.9), ..Default::default() },
            SamplingParams {
                temperature: 1.0,
                top_k: Some(100),
                top_p: Some(0.8),
                min_p: Some(0.05),
                ..Default::default()
            },
        ] {
            // The sampler reads the whole vocabulary some 40 times per draw: on the mock, where
            // that costs tens of milliseconds, fewer draws cover the same rule.
            // SCALPEL_TEST_QUICK does the same on a GPU under compute-sanitizer.
            let quick = c.gpu.is_mock() || std::env::var_os("SCALPEL_TEST_QUICK").is_some();
            let draws = if quick { 25 } else { 200 };
            // The device sums in f32 (a chunk of V/1024 terms per thread, a 10-step scan, the walk
            // through one chunk), the host in f64: every prefix of the cumulative mass may be off
            // by (2·V/1024 + 12)·2⁻²⁴ of the total, twice that for expf. A draw that disagrees must
            // lie that close to a boundary: the device's pick lies between the host's picks at
            // u ∓ δ (and, with top-p, at a top-p threshold moved by δ). At V = 1000, δ is far below
            // one candidate's width, so a pick off by one still fails.
            let delta = (2.0 * vocab.div_ceil(1024) as f64 + 12.0) * 2f64.powi(-24) * 2.0;
            let mut same = 0;
            for d in 0..draws {
                let u = (d as f64 + 0.5) / draws as f64;
                let dev = c.gpu.sample(&t, &params, u).unwrap().expect("device sampling");
                let host = pick(&logits, &params, u).unwrap();
                if dev == host {
                    same += 1;
                    continue;
                }
                let tops: Vec<Option<f32>> = match params.top_p {
                    Some(p) => [-delta, 0.0, delta].iter().map(|e| Some(p + *e as f32)).collect(),
                    None => vec![None],
                };
                let explained = tops.iter().any(|&top_p| {
                    let q = SamplingParams { top_p, ..params.clone() };
                    let lo = pick(&logits, &q, (u - delta).max(0.0)).unwrap();
                    let hi = pick(&logits, &q, (u + delta).min(1.0 - f64::EPSILON)).unwrap();
                    lo <= dev && dev <= hi
                });
                assert!(
                    explained,
                    "sample {vocab} {params:?} draw u={u}: device picked {dev}, the host {host}, \
                     and no draw within {delta:.1e} of u picks {dev}"
                );
            }
            println!(
                "  sample {vocab} t={}: {same}/{draws} draws identical, the rest at a boundary",
                params.temperature
            );
        }
    }
    let mut bad = rand(62, 1000, 1.0);
    bad[500] = f32::NAN;
    assert!(
        c.gpu.sample(&c.up(&bad, &[1, 1000]), &SamplingParams::default(), 0.0).is_err(),
        "NaN must be an error"
    );
}

/// A launcher refusing bad arguments comes back as an error naming the kernel.
fn launch_error(c: &Ctx) {
    let x = c.up(&[1.0; 8], &[2, 4]);
    let w = c.gpu.weight(Stored::from_f32(vec![1.0; 3], &[3])).unwrap();
    let e = c.gpu.rms_norm(&x, &w, 1e-5, NormKind::Plain).err().expect("8 values in groups of 3 is an error");
    assert!(e.to_string().contains("rms_norm"), "{e}");
}

/// Weights in every stored format the device keeps packed, against the CPU's products on the same
/// bytes: decode's matrix-vector kernel (f32 and bf16 x, up to 8 rows) within f32 summation error,
/// the prefill path (panels dequantized to bf16 for the GEMM) within bf16 error, the embedding
/// gather and the download bit for bit, the cosine search over a stored table.
fn qmatmul(c: &Ctx) {
    use common::qblocks::{PACKED, random_blocks};
    for (f, &ty) in PACKED.iter().enumerate() {
        let k_quant = ty.block().0 == 256;
        let shapes: &[(usize, usize)] =
            // Past 32 groups (1024 values) the decode kernel takes the row in steps of 32 groups: the
            // last shapes end on a partial step.
            if k_quant { &[(7, 256), (130, 768), (5, 2304)] } else { &[(9, 96), (33, 512), (130, 768), (5, 1056)] };
        for (s, &(rows, cols)) in shapes.iter().enumerate() {
            let bytes = random_blocks(ty, rows, cols, 1 + f as u64 * 10 + s as u64);
            let stored = || Stored::owned(ty, vec![rows, cols], bytes.clone());
            let (gw, cw) = (c.gpu.weight(stored()).unwrap(), c.cpu.weight(stored()).unwrap());
            let what = format!("{} [{rows}×{cols}]", ty.name());
            for m in [1usize, 3, 8, 20] {
                let x = rand(400 + m as u64, m * cols, 1.0);
                let want = c.cpu.matmul(&c.cpu_t(&x, &[m, cols]), &cw).unwrap();
                let got = c.down(&c.gpu.matmul(&c.up(&x, &[m, cols]), &gw).unwrap());
                // Up to 8 rows the kernel reads x as given and sums in f32; past that, W and x both
                // go through bf16 for the tensor cores: 2^-8 per product, and random data has no
                // structure to average it out (rows reach 2.5x that).
                let tol = if m <= 8 { 1e-5 } else { 2.5e-2 };
                rows_close(&format!("qmatmul {what} m={m} (f32 x)"), &got, &want.data, rows, tol);
            }
            // Decode's x comes out of a norm as bf16.
            let x = bf16(&rand(499, 2 * cols, 1.0));
            let want = c.cpu.matmul(&c.cpu_t(&x, &[2, cols]), &cw).unwrap();
            let xb = c.gpu.to_bf16(&c.up(&x, &[2, cols])).unwrap();
            rows_close(
                &format!("qmatmul {what} (bf16 x)"),
                &c.down(&c.gpu.matmul(&xb, &gw).unwrap()),
                &want.data,
                rows,
                1e-5,
            );
            // The gather and the download are the dequantized values themselves.
            let ids: Vec<u32> = (0..5).map(|i| ((i * 37 + 3) % rows) as u32).collect();
            let got = c.down(&c.gpu.embed(&gw, &c.gpu.step(&ids, 0).unwrap(), Some(1.5)).unwrap());
            let want = c.cpu.embed(&cw, &c.cpu.step(&ids, 0).unwrap(), Some(1.5)).unwrap();
            rows_close(&format!("qembed {what}"), &got, &want.data, cols, 0.0);
            rows_close(&format!("download {what}"), &c.down(&gw), &c.cpu.download(&cw).unwrap(), cols, 0.0);
            let v = rand(498, cols, 1.0);
            let got = c.down(&c.gpu.cosine_rows(&gw, &c.up(&v, &[cols])).unwrap());
            let want = c.cpu.cosine_rows(&cw, &c.cpu_t(&v, &[cols])).unwrap();
            rows_close(&format!("cosine_rows {what}"), &got, &want.data, rows, BF16_ROW);
        }
    }
}

const CASES: &[devices::Case<Ctx>] = &[
    ("qmatmul", qmatmul),
    ("embed", embed),
    ("rms_norm", rms_norm),
    ("add_rms_norm", add_rms_norm),
    ("matmul", matmul),
    ("rope_kv", rope_kv),
    ("attention", attention),
    ("attention_past_the_grid_y_limit", attention_past_the_grid_y_limit),
    ("paged_attention", paged_attention),
    ("paged_rope_kv", paged_rope_kv),
    ("glu", glu),
    ("small_ops", small_ops),
    ("interventions", interventions),
    ("sample", sample),
    ("a_launch_error_names_the_kernel", launch_error),
];

fn main() {
    let seed = std::env::var("SCALPEL_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    SEED.store(seed, Ordering::Relaxed);
    println!("kernels: inputs from seed {seed} (SCALPEL_TEST_SEED={seed} repeats them)");
    let args = devices::args(&[Schedule::Forward, Schedule::Reverse, Schedule::Random(seed)]);
    devices::run("kernels", &args, CASES, |t: &Target| {
        let gpu = t.open().with_poison();
        println!("kernels on {}", gpu.describe());
        Ctx { gpu, cpu: Cpu }
    });
}
