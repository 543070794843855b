//! The dtype and device a model runs in, as configs and flags name them: typed, so a bad name is
//! refused where it is read (with the key or flag named), not where the model is loaded.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::error::{Error, Result};

/// A compute dtype: `f32`, `bf16` or `f16` (HF's `float32`, `bfloat16`, `float16` accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Dtype {
    #[default]
    #[serde(rename = "f32", alias = "float32")]
    F32,
    #[serde(rename = "bf16", alias = "bfloat16")]
    Bf16,
    #[serde(rename = "f16", alias = "float16")]
    F16,
}

impl Dtype {
    pub fn kind(self) -> Kind {
        match self {
            Dtype::F32 => Kind::Float,
            Dtype::Bf16 => Kind::BFloat16,
            Dtype::F16 => Kind::Half,
        }
    }
}

/// A device: `cpu`, `cuda` (the first GPU) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceName {
    #[default]
    Cpu,
    Cuda(Option<usize>),
}

impl DeviceName {
    /// The libtorch device, refused when this machine does not have it.
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceName::Cpu => Ok(Device::Cpu),
            DeviceName::Cuda(None) if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceName::Cuda(None) => Err(Error::Usage(
                "device `cuda` requested but CUDA is not available".into(),
            )),
            DeviceName::Cuda(Some(i)) if (i as i64) < tch::Cuda::device_count() => {
                Ok(Device::Cuda(i))
            }
            DeviceName::Cuda(Some(i)) => Err(Error::Usage(format!(
                "device cuda:{i} requested but only {} CUDA devices exist",
                tch::Cuda::device_count()
            ))),
        }
    }
}

impl FromStr for DeviceName {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceName::Cpu),
            "cuda" => Ok(DeviceName::Cuda(None)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|i| DeviceName::Cuda(Some(i)))
                .ok_or_else(|| format!("unknown device `{s}` (expected cpu, cuda or cuda:N)")),
        }
    }
}

impl TryFrom<String> for DeviceName {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceName::Cpu => f.write_str("cpu"),
            DeviceName::Cuda(None) => f.write_str("cuda"),
            DeviceName::Cuda(Some(i)) => write!(f, "cuda:{i}"),
        }
    }
}

impl From<DeviceName> for String {
    fn from(d: DeviceName) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for (text, want) in [
            ("cpu", Some(DeviceName::Cpu)),
            ("cuda", Some(DeviceName::Cuda(None))),
            ("cuda:1", Some(DeviceName::Cuda(Some(1)))),
            ("gpu", None),
            ("cuda:x", None),
        ] {
            let got = text.parse::<DeviceName>().ok();
            assert_eq!(got, want, "{text}");
            if let Some(d) = got {
                assert_eq!(d.to_string(), text);
            }
        }
        let d: Dtype = serde_json::from_str("\"bfloat16\"").unwrap();
        assert_eq!(
            (d, serde_json::to_string(&d).unwrap()),
            (Dtype::Bf16, "\"bf16\"".into())
        );
        assert!(serde_json::from_str::<Dtype>("\"f64\"").is_err());
    }
}
