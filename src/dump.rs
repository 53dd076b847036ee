//! Writing captures as one safetensors file (the dump format of DESIGN.md), and writing any output
//! file safely: never over an existing file unless asked, never leaving a partial file behind
//! under the final name.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, tensor::TensorView};

use crate::error::{Error, Result};

/// One tensor of a dump.
pub struct DumpTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: DumpData,
}

pub enum DumpData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// Refuses to replace an existing file unless `force`, and checks that the directory exists.
pub fn check_output(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(Error::Invalid(format!("{} exists; pass --force to overwrite it", path.display())));
    }
    if path.is_dir() {
        return Err(Error::Invalid(format!("{} is a directory", path.display())));
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "cannot write {}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so the
/// final name only ever holds a complete file.
pub fn write_atomic(
    path: &Path,
    force: bool,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    check_output(path, force)?;
    let dir = parent_dir(path);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f)?;
        f.flush()?;
        f.sync_all()?;
        Ok::<(), std::io::Error>(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // A file created meanwhile by someone else is not ours to replace.
    if path.exists() && !force {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Invalid(format!(
            "{} appeared while writing; pass --force to overwrite it",
            path.display()
        )));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Serializes tensors and string metadata as safetensors and writes them atomically.
pub fn write_safetensors(
    path: &Path,
    force: bool,
    tensors: &[DumpTensor],
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            let (dtype, raw) = match &t.data {
                DumpData::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                DumpData::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            };
            (t.name.clone(), dtype, t.shape.clone(), raw)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, dtype, shape, raw)| {
            TensorView::new(*dtype, shape.clone(), raw)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Invalid(format!("dump tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: HashMap<String, String> = metadata.into_iter().collect();
    let serialized = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Invalid(format!("serializing the dump: {e}")))?;
    write_atomic(path, force, |f| f.write_all(&serialized))
}
