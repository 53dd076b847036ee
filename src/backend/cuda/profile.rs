//! Per-op timing with CUDA events, for `generate --profile`: each op is bracketed by two events on
//! the stream, and the table sums the elapsed times by op name once the stream is idle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::backend::OpTime;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream};

use super::device_err;
use crate::error::{Error, Result};

pub struct Profiler {
    ctx: Arc<CudaContext>,
    marks: Mutex<Vec<(&'static str, CudaEvent, CudaEvent)>>,
}

fn err(e: impl std::fmt::Display) -> Error {
    device_err("profiling events", e)
}

/// An event that can be timed: cudarc's default (`None`) disables timing, and `elapsed_ms` on
/// such events fails.
pub(super) fn timing_event(
    ctx: &Arc<CudaContext>,
) -> std::result::Result<CudaEvent, cudarc::driver::DriverError> {
    ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
}

impl Profiler {
    pub fn new(ctx: Arc<CudaContext>) -> Self {
        Profiler { ctx, marks: Mutex::new(Vec::new()) }
    }

    pub fn start(&self, stream: &CudaStream) -> Result<CudaEvent> {
        let e = timing_event(&self.ctx).map_err(err)?;
        e.record(stream).map_err(err)?;
        Ok(e)
    }

    pub fn stop(&self, op: &'static str, start: CudaEvent, stream: &CudaStream) -> Result<()> {
        let end = timing_event(&self.ctx).map_err(err)?;
        end.record(stream).map_err(err)?;
        self.marks.lock().expect("lock").push((op, start, end));
        Ok(())
    }

    /// Sums by op, slowest first. The caller has synchronized the stream.
    pub fn report(&self) -> Result<Vec<OpTime>> {
        let marks = self.marks.lock().expect("lock");
        let mut by: BTreeMap<&'static str, (usize, f64)> = BTreeMap::new();
        for (op, a, b) in marks.iter() {
            let ms = a.elapsed_ms(b).map_err(err)? as f64;
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
