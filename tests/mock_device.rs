//! The mock device holds CUDA's rules, so a kernel or backend bug fails here as it would on a GPU:
//! divergent barriers, collectives naming exited lanes, deadlocks, out-of-bounds writes (to memory
//! and to shared memory) and bad launch configurations are reported with the kernel and the line;
//! a missing barrier gives a wrong answer under some schedule; work waits for a synchronization;
//! graph capture records instead of running and refuses what CUDA refuses; the GEMM keeps
//! cublasGemmEx's contract; bf16 rounds as cuda_bf16.h does; out of memory is an error.

mod common;

use std::ffi::c_int;

use scalpel::backend::cuda::ffi::ScalpelStream;
use scalpel::backend::cuda::gpu::{DType, Gemm, Transpose};
use scalpel::backend::cuda::{Cuda, CudaTensor, MockOptions, Schedule};
use scalpel::backend::{Backend, Device};
use scalpel::error::Error;

unsafe extern "C" {
    fn scalpel_mock_selftest(
        stream: ScalpelStream,
        which: c_int,
        out: *mut f32,
        n: c_int,
        threads: c_int,
        smem: c_int,
    ) -> c_int;
    fn scalpel_mock_bf16_round(input: *const f32, out: *mut u16, n: i64);
}

fn mock(schedule: Schedule) -> Cuda {
    Cuda::mock(MockOptions { schedule, threads: 2, memory: 1 << 30 }).unwrap()
}

/// Runs self-test `which` and synchronizes; returns the error, or the output.
fn selftest(dev: &Cuda, which: i32, n: usize, threads: i32, smem: i32) -> Result<Vec<f32>, Error> {
    let out: CudaTensor = dev.upload(&vec![0.0; n], &[n]).unwrap();
    let ptr = out.device_ptr() as *mut f32;
    // SAFETY: out holds n floats; the self-tests write at most `threads` of them (one past n, on purpose, in 4).
    dev.launch_raw("selftest", |s| unsafe {
        scalpel_mock_selftest(s, which, ptr, n as c_int, threads, smem)
    })?;
    dev.synchronize()?;
    dev.download(&out)
}

fn fails_with(which: i32, n: usize, threads: i32, smem: i32, needles: &[&str]) {
    let e =
        selftest(&mock(Schedule::Forward), which, n, threads, smem).expect_err("the mock must refuse this");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "expected {n:?} in: {msg}");
    }
}

#[test]
fn a_barrier_some_threads_never_reach_is_reported_with_kernel_and_line() {
    fails_with(
        0,
        32,
        32,
        0,
        &["divergent __syncthreads", "barrier_after_exit_kernel", "selftest.cu", "line 11", "16 threads"],
    );
}

#[test]
fn threads_at_two_different_barriers_are_reported() {
    fails_with(1, 32, 32, 0, &["divergent __syncthreads", "split_barrier_kernel", "lines 18 and 20"]);
}

#[test]
fn a_shuffle_naming_exited_lanes_is_reported() {
    fails_with(
        2,
        32,
        32,
        0,
        &["__shfl_xor_sync", "shuffle_with_exited_lanes_kernel", "line 28", "has exited"],
    );
}

#[test]
fn a_deadlock_is_reported_not_hung() {
    fails_with(
        3,
        32,
        32,
        0,
        &["deadlock", "deadlock_kernel", "__shfl_xor_sync at line 35", "__syncthreads at line 37"],
    );
}

#[test]
fn an_out_of_bounds_write_names_the_kernel() {
    fails_with(4, 32, 33, 0, &["out_of_bounds_kernel", "past the end", "buffer of 128 bytes"]);
}

#[test]
fn a_write_past_the_dynamic_shared_memory_is_reported() {
    fails_with(
        5,
        32,
        32,
        32 * 4,
        &["shared_overflow_kernel", "past the end of the 128 bytes of dynamic shared memory"],
    );
}

#[test]
fn bad_launch_configurations_fail_as_cuda_fails_them() {
    let dev = mock(Schedule::Forward);
    // 2048 threads: no block has that many.
    let e = selftest(&dev, 7, 32, 2048, 0).unwrap_err().to_string();
    assert!(e.contains("invalid configuration argument"), "{e}");
    // 128 threads for a kernel bounded to 64.
    let e = selftest(&dev, 7, 128, 128, 0).unwrap_err().to_string();
    assert!(e.contains("too many resources requested for launch"), "{e}");
    // 64 KiB of dynamic shared memory without the opt-in, then with it.
    let e = selftest(&dev, 8, 32, 32, 64 << 10).unwrap_err().to_string();
    assert!(e.contains("invalid argument"), "{e}");
    let out = selftest(&dev, 9, 32, 32, 64 << 10).unwrap();
    assert!(out.iter().all(|&x| x == 2.0), "{out:?}");
    // The refusals were launch errors, not sticky faults: the device still works.
    assert_eq!(selftest(&dev, 7, 64, 64, 0).unwrap(), vec![1.0; 64]);
}

#[test]
fn a_missing_barrier_gives_a_wrong_answer_under_some_schedule() {
    let want: Vec<f32> = (0..64).map(|t| if t == 0 { 0.0 } else { (t - 1) as f32 }).collect();
    // Forward: each thread's neighbour ran before it, so the race goes unseen...
    assert_eq!(selftest(&mock(Schedule::Forward), 6, 64, 64, 0).unwrap(), want);
    // ...reverse: every read sees the poison shared memory starts with.
    let rev = selftest(&mock(Schedule::Reverse), 6, 64, 64, 0).unwrap();
    assert!(rev[1..].iter().all(|x| x.is_nan()), "{rev:?}");
    // Random: some reads are early.
    let rnd = selftest(&mock(Schedule::Random(7)), 6, 64, 64, 0).unwrap();
    assert!(rnd.iter().any(|x| x.is_nan()), "{rnd:?}");
}

#[test]
fn mma_follows_the_ptx_fragment_layout() {
    let out = selftest(&mock(Schedule::Random(3)), 10, 128, 32, 0).unwrap();
    for i in 0..16 {
        for j in 0..8 {
            let want: f32 = (0..16).map(|k| ((i + k) as f32) * ((k as f32) - j as f32)).sum::<f32>() + 0.5;
            assert_eq!(out[i * 8 + j], want, "D[{i}][{j}]");
        }
    }
}

#[test]
fn a_fault_is_sticky_as_in_a_cuda_context() {
    let dev = mock(Schedule::Forward);
    assert!(selftest(&dev, 3, 32, 32, 0).is_err());
    let e = dev.upload(&[1.0; 4], &[4]).and_then(|t| dev.download(&t)).unwrap_err().to_string();
    assert!(e.contains("deadlock"), "later calls report the first fault: {e}");
}

#[test]
fn work_runs_when_the_stream_is_synchronized() {
    let dev = mock(Schedule::Forward);
    let x = dev.upload(&[1.0; 8], &[1, 8]).unwrap();
    let mut y = dev.upload(&[2.0; 8], &[1, 8]).unwrap();
    dev.synchronize().unwrap();
    dev.add_assign(&mut y, &x).unwrap();
    // SAFETY: the mock's device memory is host memory; y holds 8 floats.
    let before = unsafe { *(y.device_ptr() as *const f32) };
    assert_eq!(before, 2.0, "the add has not run: nothing synchronized yet");
    assert_eq!(dev.download(&y).unwrap(), vec![3.0; 8], "a read-back runs the queue first");
}

#[test]
fn capture_records_and_replay_reruns_and_capture_refuses_what_cuda_refuses() {
    let dev = mock(Schedule::Forward);
    let x = dev.upload(&[1.0; 8], &[1, 8]).unwrap();
    let mut y = dev.upload(&[0.0; 8], &[1, 8]).unwrap();
    dev.synchronize().unwrap();
    dev.begin_capture().unwrap();
    dev.add_assign(&mut y, &x).unwrap();
    let graph = dev.end_capture().unwrap();
    assert_eq!(dev.download(&y).unwrap(), vec![0.0; 8], "recording does not run the work");
    for n in 1..=3 {
        dev.replay(&graph).unwrap();
        assert_eq!(dev.download(&y).unwrap(), vec![n as f32; 8], "replay {n}");
    }
    // A pageable copy and a synchronization inside a recording fail, and so does the recording.
    dev.begin_capture().unwrap();
    let e = dev.upload(&[1.0; 8], &[1, 8]).err().expect("a pageable copy while recording").to_string();
    assert!(e.contains("pageable"), "{e}");
    let e = dev.end_capture().err().expect("an invalidated recording").to_string();
    assert!(e.contains("invalidated"), "{e}");
    dev.begin_capture().unwrap();
    assert!(dev.synchronize().is_err());
    assert!(dev.end_capture().is_err());
}

#[test]
fn the_gemm_keeps_cublas_contract() {
    let dev = mock(Schedule::Forward);
    // C (2×3, column-major) = A (2×4) · B (4×3), A read transposed from a 4×2 store.
    let a: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..12).map(|i| (i % 5) as f32 - 2.0).collect();
    let ta = dev.upload(&a, &[8]).unwrap();
    let tb = dev.upload(&b, &[12]).unwrap();
    let tc = dev.upload(&[f32::NAN; 6], &[6]).unwrap();
    let g = Gemm {
        transa: Transpose::T,
        transb: Transpose::N,
        m: 2,
        n: 3,
        k: 4,
        alpha: 1.0,
        a: ta.device_ptr(),
        a_type: DType::F32,
        lda: 4,
        b: tb.device_ptr(),
        b_type: DType::F32,
        ldb: 4,
        beta: 0.0,
        c: tc.device_ptr(),
        c_type: DType::F32,
        ldc: 2,
    };
    // SAFETY: the three buffers hold what the arguments describe.
    unsafe { dev.gpu().gemm(&g).unwrap() };
    let c = dev.download(&tc).unwrap();
    for j in 0..3 {
        for i in 0..2 {
            let want: f32 = (0..4).map(|l| a[l + i * 4] * b[l + j * 4]).sum();
            assert_eq!(c[i + j * 2], want, "C[{i}][{j}] (beta 0 ignores the NaN C held)");
        }
    }
    // What cuBLAS refuses: a leading dimension shorter than a column, mixed input types.
    // SAFETY: refused before anything runs.
    let e = unsafe { dev.gpu().gemm(&Gemm { lda: 2, ..g }) }.unwrap_err().to_string();
    assert!(e.contains("CUBLAS_STATUS_INVALID_VALUE"), "{e}");
    let e = unsafe { dev.gpu().gemm(&Gemm { b_type: DType::Bf16, ..g }) }.unwrap_err().to_string();
    assert!(e.contains("CUBLAS_STATUS_NOT_SUPPORTED"), "{e}");
    // A product reaching past its buffers is an illegal address at run time.
    // SAFETY: deliberately wrong, caught by the mock before it reads.
    unsafe { dev.gpu().gemm(&Gemm { k: 40, lda: 40, ldb: 40, ..g }).unwrap() };
    let e = dev.synchronize().unwrap_err().to_string();
    assert!(e.contains("illegal memory access"), "{e}");
}

#[test]
fn bf16_rounds_to_nearest_even_as_cuda_does() {
    // Every 61st bit pattern (70 million floats), plus the edges.
    let mut xs: Vec<f32> = (0..=u32::MAX / 61).map(|i| f32::from_bits(i.wrapping_mul(61))).collect();
    xs.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN_POSITIVE, 1.0 + f32::EPSILON]);
    let mut out = vec![0u16; xs.len()];
    // SAFETY: equal lengths.
    unsafe { scalpel_mock_bf16_round(xs.as_ptr(), out.as_mut_ptr(), xs.len() as i64) };
    for (x, b) in xs.iter().zip(&out) {
        if x.is_nan() {
            assert!(half::bf16::from_bits(*b).is_nan(), "{x:?}");
        } else {
            assert_eq!(*b, half::bf16::from_f32(*x).to_bits(), "{x:e} ({:#x})", x.to_bits());
        }
    }
}

#[test]
fn running_out_of_device_memory_is_an_error_that_says_how_much() {
    let dev = Cuda::mock(MockOptions { schedule: Schedule::Forward, threads: 1, memory: 1 << 20 }).unwrap();
    let e = dev.upload(&vec![0.0; 1 << 20], &[1 << 20]).err().expect("4 MiB on a 1 MiB device").to_string();
    assert!(e.contains("out of device memory") && e.contains("4.0 MiB"), "{e}");
    let o = common::scalpel_env(
        &["generate", "-p", "Hello", "-n", "2", "--device", "mock"],
        &[("SCALPEL_MOCK_MEMORY", "32M")],
    );
    common::assert_clean_failure(&o, "device", "out of device memory");
}

#[test]
fn a_launch_needs_the_context_current_on_its_thread_and_the_backend_binds_it() {
    let dev = mock(Schedule::Forward);
    // The device layer's rule, as CUDA's: a thread that never made the context current cannot
    // launch on it.
    std::thread::scope(|s| {
        let e = s.spawn(|| dev.gpu().launched()).join().unwrap().expect_err("no context on this thread");
        assert!(e.to_string().contains("CUDA_ERROR_INVALID_CONTEXT"), "{e}");
        s.spawn(|| {
            dev.gpu().bind().unwrap();
            dev.gpu().launched().unwrap();
        });
    });
    // The backend binds before each launch: ops work from any thread (Python's, a server's), the
    // GEMM included.
    let x: Vec<f32> = (0..12 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    let w: Vec<f32> = (0..64 * 64).map(|i| ((i * 53 % 97) as f32 - 48.0) / 400.0).collect();
    let on_thread = || {
        let xt = dev.upload(&x, &[12, 64]).unwrap();
        let wt = dev.weight(scalpel::model::stored::Stored::from_f32(w.clone(), &[64, 64])).unwrap();
        let mut rows = dev.matmul(&xt, &wt).unwrap();
        dev.softcap(&mut rows, 3.0).unwrap();
        dev.download(&rows).unwrap()
    };
    let here = on_thread();
    let there = std::thread::scope(|s| s.spawn(on_thread).join().unwrap());
    assert_eq!(here, there);
}

#[test]
fn the_pool_returns_its_cached_blocks_to_the_device_when_dropped() {
    use scalpel::backend::cuda::gpu::Gpu;
    use scalpel::backend::cuda::gpu::mock::Mock;
    use scalpel::backend::cuda::memory::Memory;
    let gpu = std::sync::Arc::new(Mock::new(MockOptions {
        schedule: Schedule::Forward,
        threads: 1,
        memory: 1 << 24,
    }));
    let (free0, total) = gpu.mem_info().unwrap();
    assert_eq!(free0, total);
    let pool = Memory::new(gpu.clone());
    let blocks: Vec<_> =
        (0..4).map(|i| pool.alloc(1000 + 4096 * i, true, "an activation").unwrap()).collect();
    let owned = pool.alloc(5000, false, "a weight").unwrap();
    drop(blocks);
    drop(owned);
    // The activations are cached for reuse while the pool lives...
    assert!(gpu.mem_info().unwrap().0 < total);
    drop(pool);
    // ...and go back to the device with it.
    assert_eq!(gpu.mem_info().unwrap().0, total, "the pool's cache leaked");
}
