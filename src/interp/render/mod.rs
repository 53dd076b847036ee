//! Pictures: a small RGB canvas with text from system fonts (a Latin font plus a CJK fallback, so
//! token strings in any script are drawn), and the charts the microscope draws on it.

pub mod canvas;
pub mod charts;
pub mod font;

pub use canvas::{Canvas, Rgb};
