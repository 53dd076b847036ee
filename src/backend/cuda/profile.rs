//! Per-op timing for `generate --profile`: each op is bracketed by two marks on the stream (CUDA
//! events; the mock's clock), and the table sums the elapsed times by op name once the stream is
//! idle. On the mock device the times are the CPU's, not a GPU's.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::gpu::{Gpu, Mark};
use crate::backend::OpTime;
use crate::error::Result;

pub struct Profiler {
    marks: Mutex<Vec<(&'static str, Mark, Mark)>>,
}

impl Profiler {
    pub fn new() -> Self {
        Profiler { marks: Mutex::new(Vec::new()) }
    }

    pub fn record(&self, op: &'static str, start: Mark, end: Mark) {
        self.marks.lock().expect("lock").push((op, start, end));
    }

    /// Sums by op, slowest first. The caller has synchronized the stream.
    pub fn report(&self, gpu: &dyn Gpu) -> Result<Vec<OpTime>> {
        let marks = self.marks.lock().expect("lock");
        let mut by: BTreeMap<&'static str, (usize, f64)> = BTreeMap::new();
        for (op, a, b) in marks.iter() {
            let ms = gpu.elapsed_ms(a, b)? as f64;
            let e = by.entry(op).or_default();
            e.0 += 1;
            e.1 += ms;
        }
        let mut out: Vec<OpTime> = by
            .into_iter()
            .map(|(op, (calls, total_ms))| OpTime { op: op.to_string(), calls, total_ms })
            .collect();
        out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        Ok(out)
    }
}
