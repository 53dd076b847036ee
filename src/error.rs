//! One error type for the library. Each variant is a class of failure a user can act on; the
//! message names the file, the field and the value wherever there is one.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused a read or a write.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model, config, tokenizer or vector file whose bytes do not say what they claim.
    #[error("{}: malformed {field}: {detail}", path.display())]
    Format { path: PathBuf, field: String, detail: String },
    /// Well-formed input that asks for something scalpel does not implement (an architecture, a
    /// tensor type, a pre-tokenizer).
    #[error("{0}")]
    Unsupported(String),
    /// The model could not be found where the user pointed (path, repo id, default model).
    #[error("model not found: {0}")]
    NotFound(String),
    /// Tokenizer construction or use failed.
    #[error("{0}")]
    Tokenizer(String),
    /// The request itself is wrong: an empty prompt, a prompt past the context, a bad flag value.
    #[error("{0}")]
    Invalid(String),
    /// The compute device is missing, out of memory or reported an error.
    #[error("{0}")]
    Device(String),
    /// A device library call failed (the CUDA driver, cuBLAS); its own error is the source.
    #[error("{what}: {source}")]
    DeviceCall {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// Host memory would not hold what was asked for.
    #[error("{0}")]
    OutOfMemory(String),
    /// The user pressed Ctrl-C.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    pub fn format(path: impl AsRef<Path>, field: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Format { path: path.as_ref().to_path_buf(), field: field.into(), detail: detail.into() }
    }

    /// A short stable name for the class, used by the CLI's exit report and by tests.
    pub fn class(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Format { .. } => "format",
            Error::Unsupported(_) => "unsupported",
            Error::NotFound(_) => "not-found",
            Error::Tokenizer(_) => "tokenizer",
            Error::Invalid(_) => "invalid",
            Error::Device(_) | Error::DeviceCall { .. } => "device",
            Error::OutOfMemory(_) => "out-of-memory",
            Error::Interrupted(_) => "interrupted",
        }
    }
}

/// `bail!`-style constructor for [`Error::Invalid`].
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::error::Error::Invalid(format!($($arg)*)) };
}

/// `bail!`-style constructor for [`Error::Unsupported`].
#[macro_export]
macro_rules! unsupported {
    ($($arg:tt)*) => { $crate::error::Error::Unsupported(format!($($arg)*)) };
}

/// Runs `f`, turning a panic inside it (in a dependency that panics on bad input) into an error
/// message, without printing the panic.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    out.map_err(|e| {
        e.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
}
