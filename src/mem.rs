//! Process memory figures, for reports and the memory-budget checks.

/// Peak resident set size of this process (VmHWM), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Memory the OS says is available for new allocations (MemAvailable), where it reports it.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// An error when `bytes` for `what` clearly cannot fit in host memory (checked before allocating,
/// so the process reports it instead of being killed).
pub fn check_host_alloc(bytes: u128, what: &str) -> crate::Result<()> {
    let gib = |b: f64| b / (1u64 << 30) as f64;
    match available_bytes() {
        Some(avail) if bytes > avail as u128 => Err(crate::Error::OutOfMemory(format!(
            "{what} needs {:.1} GiB but only {:.1} GiB of memory is available",
            gib(bytes as f64),
            gib(avail as f64)
        ))),
        _ if bytes > isize::MAX as u128 => {
            Err(crate::Error::OutOfMemory(format!("{what} needs {bytes} bytes")))
        }
        _ => Ok(()),
    }
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Ctrl-C handling: the first press asks long work to stop at the next safe point (generation
/// flushes what it produced; writers leave no partial file); a second press exits at once.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}
