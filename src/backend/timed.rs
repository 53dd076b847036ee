//! Per-op wall-clock timing around any synchronous backend (the CPU), for `generate --profile`:
//! each op call is timed and summed by name. The CUDA backend times its ops with events on the
//! stream instead (its ops return before the work is done).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use super::{AttnParams, Backend, Device, OpTime, SeqSpan, Tensor};
use crate::error::Result;
use crate::model::config::{Activation, NormKind};
use crate::model::stored::Stored;
use crate::sample::SamplingParams;

pub struct Timed<B> {
    inner: B,
    times: Mutex<BTreeMap<String, (usize, f64)>>,
}

impl<B> Timed<B> {
    pub fn new(inner: B) -> Self {
        Timed { inner, times: Mutex::new(BTreeMap::new()) }
    }

    fn time<T>(&self, op: &str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let mut times = self.times.lock().expect("lock");
        let e = times.entry(op.to_string()).or_default();
        e.0 += 1;
        e.1 += ms;
        out
    }
}

impl<B: Device> Device for Timed<B> {
    type Step = B::Step;
    type Graph = B::Graph;

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn op_times(&self) -> Result<Vec<OpTime>> {
        let times = self.times.lock().expect("lock");
        let mut out: Vec<OpTime> = times
            .iter()
            .map(|(op, &(calls, total_ms))| OpTime { op: op.to_string(), calls, total_ms })
            .collect();
        out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        Ok(out)
    }

    fn device_memory(&self) -> Option<(usize, usize)> {
        self.inner.device_memory()
    }

    fn reserve_weights(&self, elements: u128, stored_bytes: u128) -> Result<()> {
        self.inner.reserve_weights(elements, stored_bytes)
    }
}

impl<B: Backend> Backend for Timed<B> {
    type Tensor = B::Tensor;
    type Cache = B::Cache;

    fn sample(&self, logits: &Self::Tensor, params: &SamplingParams, u: f64) -> Result<Option<u32>> {
        self.time("sample", || self.inner.sample(logits, params, u))
    }

    fn weight(&self, w: Stored) -> Result<Self::Tensor> {
        self.inner.weight(w)
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Self::Tensor> {
        self.time("upload", || self.inner.upload(data, shape))
    }

    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>> {
        self.time("download", || self.inner.download(t))
    }

    fn new_cache(
        &self,
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        capacity: usize,
    ) -> Result<Self::Cache> {
        self.inner.new_cache(n_layers, n_kv_heads, head_dim, capacity)
    }

    fn cache_capacity(&self, cache: &Self::Cache) -> usize {
        self.inner.cache_capacity(cache)
    }

    fn cache_pages(&self, cache: &Self::Cache) -> usize {
        self.inner.cache_pages(cache)
    }

    fn copy_page(&self, cache: &mut Self::Cache, from: usize, to: usize) -> Result<()> {
        self.time("copy_page", || self.inner.copy_page(cache, from, to))
    }

    fn batch(&self, ids: &[u32], seqs: &[SeqSpan]) -> Result<Self::Step> {
        self.inner.batch(ids, seqs)
    }

    fn embed(&self, table: &Self::Tensor, step: &Self::Step, scale: Option<f32>) -> Result<Self::Tensor> {
        self.time("embed", || self.inner.embed(table, step, scale))
    }

    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32, kind: NormKind) -> Result<Self::Tensor> {
        self.time("rms_norm", || self.inner.rms_norm(x, w, eps, kind))
    }

    fn add_rms_norm(
        &self,
        x: &mut Self::Tensor,
        delta: &Self::Tensor,
        w: &Self::Tensor,
        eps: f32,
        kind: NormKind,
    ) -> Result<Self::Tensor> {
        self.time("add_rms_norm", || self.inner.add_rms_norm(x, delta, w, eps, kind))
    }

    /// Timed per weight shape ([out×in]): where a decode step's time goes is mostly here.
    fn matmul(&self, x: &Self::Tensor, w: &Self::Tensor) -> Result<Self::Tensor> {
        let s = w.shape();
        self.time(&format!("matmul {}x{}", s[0], s.get(1).copied().unwrap_or(1)), || self.inner.matmul(x, w))
    }

    fn add_assign(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()> {
        self.time("add", || self.inner.add_assign(x, y))
    }

    fn rope_kv(
        &self,
        q: &mut Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        cache: &mut Self::Cache,
        layer: usize,
        step: &Self::Step,
        head_dim: usize,
        inv_freq: &Self::Tensor,
    ) -> Result<()> {
        self.time("rope_kv", || self.inner.rope_kv(q, k, v, cache, layer, step, head_dim, inv_freq))
    }

    fn attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::Cache,
        layer: usize,
        step: &Self::Step,
        p: &AttnParams,
    ) -> Result<(Self::Tensor, Self::Tensor)> {
        self.time("attention", || self.inner.attention(q, cache, layer, step, p))
    }

    fn attn_probs(
        &self,
        q: &Self::Tensor,
        cache: &Self::Cache,
        layer: usize,
        step: &Self::Step,
        seq: usize,
        p: &AttnParams,
        lse: &Self::Tensor,
    ) -> Result<Self::Tensor> {
        self.time("attn_probs", || self.inner.attn_probs(q, cache, layer, step, seq, p, lse))
    }

    fn glu(&self, gate: &Self::Tensor, up: &Self::Tensor, act: Activation) -> Result<Self::Tensor> {
        self.time("glu", || self.inner.glu(gate, up, act))
    }

    fn softcap(&self, x: &mut Self::Tensor, cap: f32) -> Result<()> {
        self.time("softcap", || self.inner.softcap(x, cap))
    }

    fn gather_rows(&self, x: &Self::Tensor, rows: &[usize]) -> Result<Self::Tensor> {
        self.time("gather_rows", || self.inner.gather_rows(x, rows))
    }

    fn write_rows(&self, x: &mut Self::Tensor, first: usize, src: &Self::Tensor) -> Result<()> {
        self.time("write_rows", || self.inner.write_rows(x, first, src))
    }

    fn cosine_rows(&self, table: &Self::Tensor, v: &Self::Tensor) -> Result<Self::Tensor> {
        self.time("cosine_rows", || self.inner.cosine_rows(table, v))
    }

    fn add_rows(&self, x: &mut Self::Tensor, v: &Self::Tensor, scale: f32, rows: &[usize]) -> Result<()> {
        self.time("add_rows", || self.inner.add_rows(x, v, scale, rows))
    }

    fn set_row(&self, x: &mut Self::Tensor, row: usize, values: &Self::Tensor) -> Result<()> {
        self.time("set_row", || self.inner.set_row(x, row, values))
    }

    fn ablate_rows(&self, x: &mut Self::Tensor, u: &Self::Tensor, rows: &[usize]) -> Result<()> {
        self.time("ablate_rows", || self.inner.ablate_rows(x, u, rows))
    }
}
