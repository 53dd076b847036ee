//! scalpel: a CUDA-native LLM inference engine that is also a microscope for the model it runs.
//!
//! The path of one token: [`model`] opens the files and the tokenizer, [`forward::Model`] runs the
//! transformer over a [`backend::Backend`] with [`probe`] points between every step, and
//! [`generate`] samples one token after another. See DESIGN.md for the architecture.

pub mod backend;
pub mod cli;
pub mod dump;
pub mod error;
pub mod forward;
pub mod fuzz;
pub mod generate;
pub mod interp;
pub mod mem;
pub mod model;
pub mod probe;
pub mod progress;
pub mod sample;
pub mod schedule;

pub use error::{Error, Result};
