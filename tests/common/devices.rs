//! The devices the CUDA test binaries run one test body on — llama.cpp's test-backend-ops and
//! candle's test_device! in spirit: the mock device under several schedules in every `cargo test`,
//! and the GPU when there is one (or when `--device cuda` asks, as scripts/gpu_check.sh does).
//!
//! Arguments of the custom-harness binaries (tests/kernels.rs, tests/cuda_model.rs):
//!   --device mock|cuda|all     (default: mock, plus cuda when a GPU is present)
//!   --schedule LIST            mock schedules, e.g. forward,reverse,random:7 (default per binary)
//!   --list                     print the test names, one per line, and run nothing
//!   --exact NAME               run the test of exactly this name (repeatable; scripts/gpu_check.sh
//!                              runs each kernel case in its own process this way)
//!   NAME...                    run only the tests whose names contain one of these

use std::panic::{AssertUnwindSafe, catch_unwind};

use scalpel::backend::cuda::{Cuda, MockOptions, Schedule};

pub struct Target {
    pub label: String,
    pub schedule: Option<Schedule>,
}

impl Target {
    /// A fresh backend on this target (kernel tests poison every activation).
    pub fn open(&self) -> Cuda {
        match self.schedule {
            Some(schedule) => {
                let mut o = MockOptions::from_env().expect("SCALPEL_MOCK_* settings");
                o.schedule = schedule;
                Cuda::mock(o).expect("the mock device")
            }
            None => Cuda::new(0).expect("CUDA device"),
        }
    }
}

pub struct Args {
    pub targets: Vec<Target>,
    pub filters: Vec<String>,
    pub exact: Vec<String>,
    pub list: bool,
    pub skipped_gpu: bool,
}

/// Reads the arguments; `default_schedules` is what the mock runs under without --schedule.
pub fn args(default_schedules: &[Schedule]) -> Args {
    let mut device = None;
    let mut schedules: Option<Vec<Schedule>> = None;
    let mut filters = Vec::new();
    let mut exact = Vec::new();
    let mut list = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => device = Some(it.next().expect("--device needs a value")),
            "--exact" => exact.push(it.next().expect("--exact needs a test name")),
            // `cargo test -- --list` asks the same of the default harness.
            "--list" => list = true,
            "--schedule" => {
                let list = it.next().expect("--schedule needs a value");
                schedules = Some(list.split(',').map(|s| s.parse().expect("a schedule")).collect());
            }
            // cargo test passes its own flags (--nocapture, --quiet, ...): ignore them.
            s if s.starts_with('-') => {}
            s => filters.push(s.to_string()),
        }
    }
    let schedules = schedules.unwrap_or_else(|| default_schedules.to_vec());
    let mock = || schedules.iter().map(|&s| Target { label: format!("mock/{s}"), schedule: Some(s) });
    let gpu = || Target { label: "cuda".into(), schedule: None };
    let mut skipped_gpu = false;
    let targets = match device.as_deref() {
        Some("mock") => mock().collect(),
        Some("cuda") => vec![gpu()],
        Some("all") => mock().chain([gpu()]).collect(),
        None => {
            let mut t: Vec<Target> = mock().collect();
            if Cuda::available() {
                t.push(gpu());
            } else {
                skipped_gpu = true;
            }
            t
        }
        Some(other) => panic!("--device {other}: expected mock, cuda or all"),
    };
    Args { targets, filters, exact, list, skipped_gpu }
}

impl Args {
    pub fn wants(&self, name: &str) -> bool {
        if !self.exact.is_empty() {
            return self.exact.iter().any(|e| e == name);
        }
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }
}

/// A named test body taking the binary's context.
pub type Case<C> = (&'static str, fn(&C));

/// Runs every chosen test on every target and exits 1 if any failed.
pub fn run<C>(binary: &str, args: &Args, tests: &[Case<C>], ctx: impl Fn(&Target) -> C) {
    if args.list {
        for (name, _) in tests {
            println!("{name}");
        }
        return;
    }
    if let Some(unknown) = args.exact.iter().find(|e| !tests.iter().any(|(n, _)| n == e)) {
        println!("{binary}: no test named {unknown:?} (--list prints them)");
        std::process::exit(1);
    }
    if args.skipped_gpu {
        println!(
            "{binary}: no CUDA driver or GPU here: running on the mock device only (scripts/gpu_check.sh runs the GPU)"
        );
    }
    let mut failed = Vec::new();
    let mut ran = 0;
    for target in &args.targets {
        if target.schedule.is_none() && !Cuda::available() {
            println!("{binary}: --device cuda asked for, but there is no CUDA driver or GPU here");
            std::process::exit(1);
        }
        let c = ctx(target);
        for (name, f) in tests.iter().filter(|(n, _)| args.wants(n)) {
            let t = std::time::Instant::now();
            ran += 1;
            match catch_unwind(AssertUnwindSafe(|| f(&c))) {
                Ok(()) => {
                    println!("test {name} on {} ... ok ({:.2}s)", target.label, t.elapsed().as_secs_f64())
                }
                Err(_) => {
                    println!("test {name} on {} ... FAILED", target.label);
                    failed.push(format!("{name} on {}", target.label));
                }
            }
        }
    }
    if !failed.is_empty() {
        println!("{binary}: FAILED {failed:?}");
        std::process::exit(1);
    }
    println!("{binary}: {ran} passed");
}
