//! Which instruction set the kernels use: detected at run time, overridable by the caller (one
//! process-wide default), and forcible per call for tests and benchmarks.

use std::sync::atomic::{AtomicU8, Ordering};

use super::format::{QError, QResult};

/// A kernel family. Every family computes the same dequantized weights bit for bit; the sums differ
/// only in float summation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, any CPU (the compiler may still vectorize it with the baseline target features).
    Portable,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512F (plus the AVX2, FMA and F16C every such CPU has).
    Avx512,
    /// AArch64 Advanced SIMD (NEON), part of every AArch64 CPU.
    Neon,
}

impl Isa {
    /// Every family, in order of preference for `detect` (best last).
    pub const ALL: [Isa; 4] = [Isa::Portable, Isa::Neon, Isa::Avx2, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parses a name as `name` writes it (for a command-line flag or an environment variable).
    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name().eq_ignore_ascii_case(s))
    }

    /// Whether this build has the kernels and this CPU can run them.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Isa::Avx2.is_available() && is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Whether this build contains kernels for the family at all (regardless of the CPU).
    pub fn is_compiled(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2 | Isa::Avx512 => cfg!(target_arch = "x86_64"),
            Isa::Neon => cfg!(target_arch = "aarch64"),
        }
    }

    /// The families this CPU can run, portable first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The best family this CPU can run.
    pub fn detect() -> Isa {
        Isa::ALL.into_iter().rev().find(|i| i.is_available()).unwrap_or(Isa::Portable)
    }

    /// A proof, for the dispatchers, that the CPU runs this family.
    pub(super) fn ready(self) -> QResult<Ready> {
        if self.is_available() {
            Ok(Ready(self))
        } else {
            Err(QError(format!(
                "instruction set {} is not available on this CPU/build (available: {})",
                self.name(),
                Isa::available().iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
            )))
        }
    }
}

/// An `Isa` checked with `is_available`. Only `Isa::ready` makes one, so a dispatcher holding it
/// may call that family's `#[target_feature]` kernels.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ready(Isa);

impl Ready {
    pub(super) fn isa(self) -> Isa {
        self.0
    }
}

/// 0: not set (use `detect`); otherwise 1 + the index in `Isa::ALL`.
static DEFAULT: AtomicU8 = AtomicU8::new(0);

/// The family `matvec`, `matvec_batch`, `matmul` and `dequantize_rows` use: the one set with
/// `set_default_isa`, or else the best this CPU runs.
pub fn default_isa() -> Isa {
    match DEFAULT.load(Ordering::Relaxed) {
        0 => Isa::detect(),
        n => Isa::ALL[n as usize - 1],
    }
}

/// Sets the process-wide default family (`None`: back to detection). Fails, changing nothing,
/// when the CPU cannot run it.
pub fn set_default_isa(isa: Option<Isa>) -> QResult<()> {
    let code = match isa {
        None => 0,
        Some(isa) => {
            isa.ready()?;
            1 + Isa::ALL.iter().position(|&i| i == isa).unwrap_or(0) as u8
        }
    };
    DEFAULT.store(code, Ordering::Relaxed);
    Ok(())
}

/// Applies SCALPEL_CPU_ISA (portable, avx2, avx512, neon) when set: an error names what this CPU
/// can run instead.
pub fn default_isa_from_env() -> QResult<()> {
    let Ok(name) = std::env::var("SCALPEL_CPU_ISA") else {
        return Ok(());
    };
    let isa = Isa::from_name(&name).ok_or_else(|| {
        QError(format!("SCALPEL_CPU_ISA={name:?}: expected one of portable, avx2, avx512, neon"))
    })?;
    set_default_isa(Some(isa)).map_err(|e| {
        let can: Vec<&str> = Isa::ALL.iter().filter(|i| i.is_available()).map(|i| i.name()).collect();
        QError(format!("SCALPEL_CPU_ISA={name}: {e} (this CPU runs: {})", can.join(", ")))
    })
}
