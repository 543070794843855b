//! JSON files: read with the offending key path (`a.b[2]`) named in errors, written pretty and
//! atomically.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// Reads and deserialises a JSON file.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Missing {
            path: path.to_owned(),
            what: "file",
        },
        _ => Error::io(path, e),
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })?;
    from_value(path, value)
}

/// Reads a JSON file if it exists.
pub fn read_opt<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if path.is_file() {
        read(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Deserialises a JSON value that came from `path`, naming the offending key on failure.
pub fn from_value<T: DeserializeOwned>(path: &Path, value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        Error::Invalid {
            path: path.to_owned(),
            key: if key == "." { "<root>".into() } else { key },
            msg: e.into_inner().to_string(),
        }
    })
}

/// Serialises `value` as pretty JSON (with a final newline) and writes it atomically.
pub fn write<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })?;
    text.push('\n');
    crate::atomic::write(path, text.as_bytes())
}

/// Serde for an `f64` that may be NaN ("not measured"): JSON has no NaN, and serde_json writes
/// it as `null`, which then does not read back as a number; this reads `null` back as NaN.
/// Use as `#[serde(with = "next_files::json::nan_null")]`.
pub mod nan_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
        if x.is_nan() {
            s.serialize_none()
        } else {
            s.serialize_f64(*x)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        steps: Vec<u64>,
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("doc.json");
        let check = |text: &str, want: &str| {
            std::fs::write(&p, text).unwrap();
            let e = read::<Doc>(&p).unwrap_err().to_string();
            assert!(e.contains("doc.json") && e.contains(want), "{e}");
        };
        check(r#"{"steps": [1, "x"]}"#, "key `steps[1]`");
        check("{", "invalid JSON");
        let e = read::<Doc>(&d.path().join("none.json")).unwrap_err();
        assert!(e.to_string().contains("missing file"), "{e}");
        assert!(read_opt::<Doc>(&d.path().join("none.json"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn nan_reads_back_as_nan() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct M {
            #[serde(with = "nan_null")]
            x: f64,
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.json");
        for x in [f64::NAN, 0.25] {
            write(&p, &M { x }).unwrap();
            let back = read::<M>(&p).unwrap().x;
            assert!(back == x || (back.is_nan() && x.is_nan()), "{x} -> {back}");
        }
    }
}
