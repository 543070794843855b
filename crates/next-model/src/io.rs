//! Safetensors files <-> libtorch tensors (memory-mapped reads, atomic writes). JSON, atomic
//! writes and file names are `next_files`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

/// Whether a safetensors dtype holds model weights we can compute with.
pub fn is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double
    )
}

/// A tensor read from a safetensors file, remembering where it came from for error messages.
#[derive(Debug)]
pub struct Loaded {
    pub tensor: Tensor,
    pub file: PathBuf,
}

/// Reads every tensor of one safetensors file (memory-mapped, copied once into libtorch).
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Loaded>> {
    let file = fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::missing(path, "safetensors file"),
        _ => Error::io(path, e),
    })?;
    // SAFETY: the map is read-only and dropped before this function returns; a concurrent
    // truncation by another process is the only hazard, as with any mmap reader.
    #[allow(unsafe_code)]
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&mmap).map_err(|e| Error::Safetensors {
        path: path.to_owned(),
        msg: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| Error::TensorDtype {
            path: path.to_owned(),
            key: name.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)?;
        out.insert(
            name,
            Loaded {
                tensor,
                file: path.to_owned(),
            },
        );
    }
    Ok(out)
}

/// Writes named tensors as a safetensors file (atomically), with `{"format": "pt"}` metadata
/// as transformers and PEFT expect.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.to_device(Device::Cpu).contiguous();
        let kind = t.kind();
        let dtype = dtype_of(kind).ok_or_else(|| {
            Error::invalid(path, name.clone(), format!("cannot save dtype {kind:?}"))
        })?;
        let numel = t.numel();
        let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), dtype, shape, data));
    }
    write_raw_safetensors(path, &owned)
}

/// Writes already-encoded tensors `(name, dtype, shape, little-endian bytes)` as a safetensors
/// file (atomically), with `{"format": "pt"}` metadata.
pub fn write_raw_safetensors(
    path: &Path,
    tensors: &[(String, safetensors::Dtype, Vec<usize>, Vec<u8>)],
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::invalid(path, name.clone(), e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let bytes =
        safetensors::tensor::serialize(views, metadata).map_err(|e| Error::Safetensors {
            path: path.to_owned(),
            msg: e.to_string(),
        })?;
    Ok(next_files::atomic::write(path, &bytes)?)
}
