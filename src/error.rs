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
            Error::Device(_) => "device",
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
