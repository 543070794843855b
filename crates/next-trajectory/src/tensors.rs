//! Memory-mapped safetensors files: the header is parsed once, and a 2-D tensor is converted to
//! an f64 matrix only when asked for, so a checkpoint is never loaded whole.

use std::path::{Path, PathBuf};

use nalgebra::DMatrix;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

/// One safetensors file, mapped.
#[derive(Debug)]
pub struct Mapped {
    pub path: PathBuf,
    mmap: memmap2::Mmap,
    header_len: usize,
    meta: Metadata,
}

impl Mapped {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file truncated underneath us by another process is
        // the only hazard, as with any mmap reader, and checkpoints are written once.
        #[allow(unsafe_code)]
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, meta) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| Error::format(path, format!("not a complete safetensors file: {e}")))?;
        Ok(Self {
            path: path.to_owned(),
            mmap,
            header_len,
            meta,
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.meta.offset_keys()
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.meta.info(name)
    }

    /// The raw bytes of a tensor.
    fn bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self
            .meta
            .info(name)
            .ok_or_else(|| Error::format(&self.path, format!("no tensor `{name}`")))?;
        let start = 8 + self.header_len;
        let (a, b) = info.data_offsets;
        Ok((info, &self.mmap[start + a..start + b]))
    }

    /// A 2-D tensor as an f64 matrix (rows x cols as stored), refusing NaN and infinities.
    pub fn matrix(&self, name: &str) -> Result<DMatrix<f64>> {
        let (rows, cols, values) = self.values(name)?;
        Ok(DMatrix::from_row_slice(rows, cols, &values))
    }

    /// The transpose of [`Mapped::matrix`], which is free: row-major storage read column-major.
    pub fn matrix_transposed(&self, name: &str) -> Result<DMatrix<f64>> {
        let (rows, cols, values) = self.values(name)?;
        Ok(DMatrix::from_vec(cols, rows, values))
    }

    fn values(&self, name: &str) -> Result<(usize, usize, Vec<f64>)> {
        let (info, bytes) = self.bytes(name)?;
        let [rows, cols] = info.shape[..] else {
            return Err(Error::format(
                &self.path,
                format!("tensor `{name}` has shape {:?}; expected 2-D", info.shape),
            ));
        };
        let values = to_f64(bytes, info.dtype).ok_or_else(|| {
            Error::format(
                &self.path,
                format!(
                    "tensor `{name}` has dtype {:?}; expected F32, F16, BF16 or F64",
                    info.dtype
                ),
            )
        })?;
        // A non-finite value makes the sum non-finite (a vectorised pass); only then locate it.
        if let Some(i) = (!values.iter().sum::<f64>().is_finite())
            .then(|| values.iter().position(|x| !x.is_finite()))
            .flatten()
        {
            return Err(Error::NotFinite(format!(
                "{}: tensor `{name}` has a non-finite value ({}) at [{}, {}]",
                self.path.display(),
                values[i],
                i / cols.max(1),
                i % cols.max(1)
            )));
        }
        Ok((rows, cols, values))
    }
}

/// Little-endian bytes of a float dtype to f64 (None for other dtypes).
fn to_f64(bytes: &[u8], dtype: Dtype) -> Option<Vec<f64>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        _ => return None,
    })
}
