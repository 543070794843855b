//! The on-disk trajectory store: `index.json` (what was extracted, from which checkpoints, with
//! which gaps, and how many bytes of records are committed) and `records.bin` (append-only,
//! one checksummed record per (step, module, kind)).
//!
//! A record is `b"NXR1"`, a little-endian u32 header length, a JSON header, the payload (u then
//! v, column-major f32 little-endian; σ and ‖Δ‖²_F stay f64 in the header) and a CRC-32 of all
//! of it. Appends write records past the committed length, fsync, then replace the index
//! atomically; bytes past the committed length are an interrupted append, invisible to
//! readers and overwritten by the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::Format;
use crate::{Error, Result};

pub const VERSION: u32 = 1;
const MAGIC: &[u8; 4] = b"NXR1";
pub const INDEX: &str = "index.json";
pub const RECORDS: &str = "records.bin";

/// Which NExt delta a record decomposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// W_t − W_0
    Global,
    /// W_t − W_(t−Δ)
    Local,
    /// W_(t+g) − W_t
    Target,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Global, Kind::Local, Kind::Target];
    pub fn name(self) -> &'static str {
        match self {
            Kind::Global => "global",
            Kind::Local => "local",
            Kind::Target => "target",
        }
    }
}

/// A matrix the store tracks: its key stem and shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    /// PEFT key stem (`base_model.model.model.layers.0.self_attn.q_proj`), or the weight name
    /// without `.weight` in full-parameter mode.
    pub name: String,
    pub out: usize,
    pub inp: usize,
}

/// A checkpoint the store has read, with a fingerprint to notice it changing afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub step: u64,
    pub dir: PathBuf,
    /// Bytes and modification time (ns) of the weight files.
    pub fingerprint: (u64, u128),
}

/// What the store holds and how it was made; `records_len` is the committed length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub version: u32,
    pub format: Format,
    /// Singular triplets kept per record.
    pub rank: usize,
    pub interval: u64,
    pub delta_gap: u64,
    pub target_gap: u64,
    /// W_0: "base" (the weights the adapters apply to) or "step 0" (a checkpoint at step 0).
    pub origin: String,
    /// LoRA scaling (alpha/r or alpha/sqrt r), None in full-parameter mode.
    pub scaling: Option<f64>,
    pub modules: Vec<Module>,
    pub sources: Vec<Source>,
    pub records_len: u64,
    pub records: u64,
}

/// The header of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    step: u64,
    module: usize,
    kind: Kind,
    sigma: Vec<f64>,
    frobenius_sq: f64,
}

/// One rank-k decomposition: Δ ≈ Σ_j σ_j u_j v_jᵀ.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub step: u64,
    /// Index into `Index::modules`.
    pub module: usize,
    pub kind: Kind,
    pub sigma: Vec<f64>,
    pub frobenius_sq: f64,
    /// out x k, column-major.
    pub u: Vec<f32>,
    /// in x k, column-major.
    pub v: Vec<f32>,
}

impl Record {
    /// σ1² / ‖Δ‖²_F.
    pub fn energy(&self) -> f64 {
        match self.sigma.first() {
            Some(s) if self.frobenius_sq > 0.0 => s * s / self.frobenius_sq,
            _ => 0.0,
        }
    }

    pub fn u1(&self, out: usize) -> &[f32] {
        &self.u[..out]
    }

    pub fn v1(&self, inp: usize) -> &[f32] {
        &self.v[..inp]
    }

    fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&Header {
            step: self.step,
            module: self.module,
            kind: self.kind,
            sigma: self.sigma.clone(),
            frobenius_sq: self.frobenius_sq,
        })
        .expect("a header serialises");
        let mut buf = Vec::with_capacity(12 + header.len() + 4 * (self.u.len() + self.v.len()));
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
        buf.extend_from_slice(&header);
        for x in self.u.iter().chain(&self.v) {
            buf.extend_from_slice(&x.to_le_bytes());
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }
}

/// An opened store: its index and every committed record, verified.
#[derive(Debug)]
pub struct Store {
    pub dir: PathBuf,
    pub index: Index,
    pub records: Vec<Record>,
}

impl Store {
    /// Whether `dir` holds a store.
    pub fn exists(dir: &Path) -> bool {
        dir.join(INDEX).is_file()
    }

    /// Reads and verifies a store: every committed record's magic, bounds and checksum.
    pub fn open(dir: &Path) -> Result<Self> {
        let ipath = dir.join(INDEX);
        let text = std::fs::read_to_string(&ipath).map_err(|e| Error::io(&ipath, e))?;
        let index: Index = serde_json::from_str(&text)
            .map_err(|e| Error::store(&ipath, format!("unreadable index: {e}")))?;
        if index.version != VERSION {
            return Err(Error::store(
                &ipath,
                format!(
                    "store version {} (this build reads {VERSION})",
                    index.version
                ),
            ));
        }
        let rpath = dir.join(RECORDS);
        let bytes = std::fs::read(&rpath).map_err(|e| Error::io(&rpath, e))?;
        if (bytes.len() as u64) < index.records_len {
            return Err(Error::store(
                &rpath,
                format!(
                    "truncated: the index commits {} bytes but the file has {}",
                    index.records_len,
                    bytes.len()
                ),
            ));
        }
        let records = decode_all(&bytes[..index.records_len as usize], &index, &rpath)?;
        if records.len() as u64 != index.records {
            return Err(Error::store(
                &rpath,
                format!(
                    "holds {} records, the index says {}",
                    records.len(),
                    index.records
                ),
            ));
        }
        Ok(Self {
            dir: dir.to_owned(),
            index,
            records,
        })
    }

    /// Creates an empty store (replacing nothing: refuses if one exists).
    pub fn create(dir: &Path, index: Index) -> Result<Self> {
        if Self::exists(dir) {
            return Err(Error::store(
                &dir.join(INDEX),
                "a store already exists here",
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let store = Self {
            dir: dir.to_owned(),
            index: Index {
                records_len: 0,
                records: 0,
                ..index
            },
            records: vec![],
        };
        let rpath = dir.join(RECORDS);
        std::fs::File::create(&rpath).map_err(|e| Error::io(&rpath, e))?;
        store.write_index()?;
        Ok(store)
    }

    /// Appends records and commits them together with an updated index (modules and sources
    /// as given). Either all of them become visible or none does.
    pub fn append(&mut self, records: Vec<Record>, index: Index) -> Result<()> {
        let rpath = self.dir.join(RECORDS);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&rpath)
            .map_err(|e| Error::io(&rpath, e))?;
        // Drop whatever an interrupted append left past the committed length.
        file.set_len(self.index.records_len)
            .map_err(|e| Error::io(&rpath, e))?;
        file.seek(SeekFrom::Start(self.index.records_len))
            .map_err(|e| Error::io(&rpath, e))?;
        let mut len = self.index.records_len;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        for r in &records {
            let bytes = r.encode();
            w.write_all(&bytes).map_err(|e| Error::io(&rpath, e))?;
            len += bytes.len() as u64;
        }
        w.flush().map_err(|e| Error::io(&rpath, e))?;
        drop(w);
        file.sync_all().map_err(|e| Error::io(&rpath, e))?;
        self.index = Index {
            records_len: len,
            records: self.index.records + records.len() as u64,
            ..index
        };
        self.write_index()?;
        self.records.extend(records);
        Ok(())
    }

    fn write_index(&self) -> Result<()> {
        let path = self.dir.join(INDEX);
        let text = serde_json::to_string_pretty(&self.index).expect("the index serialises");
        Ok(next_files::atomic::write(&path, text.as_bytes())?)
    }

    /// The (step, module, kind) keys present.
    pub fn keys(&self) -> BTreeSet<(u64, usize, Kind)> {
        self.records
            .iter()
            .map(|r| (r.step, r.module, r.kind))
            .collect()
    }

    /// One module's records of one kind by step. With `aligned`, (u, v) pairs are flipped
    /// together wherever u_t · u_(t−1) < 0 so the series is continuous; without, the signs
    /// are the SVD's, as stored.
    pub fn series(&self, module: usize, kind: Kind, aligned: bool) -> Vec<Record> {
        let by_step: BTreeMap<u64, &Record> = self
            .records
            .iter()
            .filter(|r| r.module == module && r.kind == kind)
            .map(|r| (r.step, r))
            .collect();
        let mut out: Vec<Record> = by_step.into_values().cloned().collect();
        if aligned {
            let out_dim = self.index.modules[module].out;
            for t in 1..out.len() {
                let dot: f64 = out[t]
                    .u1(out_dim)
                    .iter()
                    .zip(out[t - 1].u1(out_dim))
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                if dot < 0.0 {
                    let k = out[t].sigma.len().max(1);
                    let (n_u, n_v) = (out[t].u.len() / k, out[t].v.len() / k);
                    out[t].u[..n_u].iter_mut().for_each(|x| *x = -*x);
                    out[t].v[..n_v].iter_mut().for_each(|x| *x = -*x);
                }
            }
        }
        out
    }
}

fn decode_all(bytes: &[u8], index: &Index, path: &Path) -> Result<Vec<Record>> {
    let mut out = vec![];
    let mut pos = 0usize;
    while pos < bytes.len() {
        let n = out.len();
        let bad = |msg: String| Error::store(path, format!("record {n} at byte {pos}: {msg}"));
        let rest = &bytes[pos..];
        if rest.len() < 8 || &rest[..4] != MAGIC {
            return Err(bad("bad magic or truncated".into()));
        }
        let hlen = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
        let header: Header = rest
            .get(8..8 + hlen)
            .and_then(|h| serde_json::from_slice(h).ok())
            .ok_or_else(|| bad("unreadable header".into()))?;
        let module = index
            .modules
            .get(header.module)
            .ok_or_else(|| bad(format!("module index {} out of range", header.module)))?;
        let what = format!(
            "step {} module {} kind {}",
            header.step,
            module.name,
            header.kind.name()
        );
        let k = header.sigma.len();
        // Zero and rank-deficient deltas keep fewer triplets than asked, but never none:
        // readers take the first one.
        if !(1..=index.rank.max(1)).contains(&k) {
            return Err(bad(format!(
                "{what}: {k} singular values, expected 1 to {}",
                index.rank
            )));
        }
        let floats = k * (module.out + module.inp);
        let end = 8 + hlen + 4 * floats;
        if rest.len() < end + 4 {
            return Err(bad(format!("{what}: truncated payload")));
        }
        let crc = u32::from_le_bytes(rest[end..end + 4].try_into().expect("4 bytes"));
        if crc32fast::hash(&rest[..end]) != crc {
            return Err(bad(format!("{what}: checksum mismatch (corrupted)")));
        }
        let mut vals = rest[8 + hlen..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
        let u: Vec<f32> = vals.by_ref().take(k * module.out).collect();
        let v: Vec<f32> = vals.collect();
        out.push(Record {
            step: header.step,
            module: header.module,
            kind: header.kind,
            sigma: header.sigma,
            frobenius_sq: header.frobenius_sq,
            u,
            v,
        });
        pos += end + 4;
    }
    Ok(out)
}
