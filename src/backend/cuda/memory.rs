//! Device memory: weights and caches allocated once; activations from a caching pool, so the
//! same sequence of allocations (one decode step after another) gets the same addresses — which
//! is what lets a recorded CUDA graph replay — and an allocation costs a list pop, not a cuMemAlloc.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::gpu::{AllocError, Gpu};
use crate::error::{Error, Result};

/// Allocation granularity: sizes are rounded up so near-equal requests share free lists.
const ROUND: usize = 512;

#[derive(Default)]
struct PoolState {
    /// Rounded size → free blocks, reused last-in first-out.
    free: HashMap<usize, Vec<u64>>,
    /// Bytes held from the device (live plus cached).
    held: usize,
    peak: usize,
}

pub struct Memory {
    gpu: Arc<dyn Gpu>,
    state: Mutex<PoolState>,
}

/// One device allocation; returned to the pool (or to the device) on drop.
pub struct Block {
    pub ptr: u64,
    pub bytes: usize,
    pooled: bool,
    memory: Arc<Memory>,
}

impl Drop for Block {
    fn drop(&mut self) {
        let mut s = self.memory.state.lock().expect("pool lock");
        if self.pooled {
            s.free.entry(self.bytes).or_default().push(self.ptr);
        } else {
            // SAFETY: the pointer came from the device's alloc and nothing else owns it.
            unsafe { self.memory.gpu.free(self.ptr) };
            s.held -= self.bytes;
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // Every Block holds the pool, so none is live now: what is left are the cached blocks,
        // which go back to the device (the device outlives its pool, and another pool may need
        // the memory: the context is the process's, not this backend's).
        let s = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, list) in s.free.drain() {
            for p in list {
                // SAFETY: cached blocks are owned by the pool and no queued work uses them (the
                // backend synchronizes its stream before it lets go of the pool).
                unsafe { self.gpu.free(p) };
            }
        }
        s.held = 0;
    }
}

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl Memory {
    pub fn new(gpu: Arc<dyn Gpu>) -> Arc<Self> {
        Arc::new(Memory { gpu, state: Mutex::new(PoolState::default()) })
    }

    /// Bytes held from the device now, and at most so far.
    pub fn usage(&self) -> (usize, usize) {
        let s = self.state.lock().expect("pool lock");
        (s.held, s.peak)
    }

    /// Allocates `bytes` (pooled for activations, owned for weights and caches). Out of memory
    /// releases the cache and retries once, then reports what was needed and what is free.
    pub fn alloc(self: &Arc<Self>, bytes: usize, pooled: bool, what: &str) -> Result<Arc<Block>> {
        let size = bytes.max(1).div_ceil(ROUND) * ROUND;
        let ptr = self.take(size, pooled, what)?;
        // The new owner uses `bytes` of the block: the mock device guards the rest.
        self.gpu.fresh(ptr, bytes)?;
        Ok(Arc::new(Block { ptr, bytes: size, pooled, memory: self.clone() }))
    }

    fn take(&self, size: usize, pooled: bool, what: &str) -> Result<u64> {
        let mut s = self.state.lock().expect("pool lock");
        if pooled && let Some(ptr) = s.free.get_mut(&size).and_then(Vec::pop) {
            return Ok(ptr);
        }
        let ptr = match self.gpu.alloc(size) {
            Ok(p) => p,
            Err(AllocError::Other(e)) => return Err(e),
            Err(AllocError::OutOfMemory(_)) => {
                let cached: Vec<(usize, Vec<u64>)> = s.free.drain().collect();
                for (block_size, list) in cached {
                    for p in list {
                        // SAFETY: cached blocks are owned by the pool and unused.
                        unsafe { self.gpu.free(p) };
                        s.held -= block_size;
                    }
                }
                match self.gpu.alloc(size) {
                    Ok(p) => p,
                    Err(AllocError::Other(e)) => return Err(e),
                    Err(AllocError::OutOfMemory(why)) => {
                        let (free, total) = self.gpu.mem_info().unwrap_or((0, 0));
                        return Err(Error::Device(format!(
                            "out of device memory: {what} needs {:.1} MiB, {:.1} MiB free of {:.1} MiB ({why})",
                            mib(size),
                            mib(free),
                            mib(total)
                        )));
                    }
                }
            }
        };
        s.held += size;
        s.peak = s.peak.max(s.held);
        Ok(ptr)
    }
}
