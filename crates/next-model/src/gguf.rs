//! GGUF import: a llama.cpp model file (Llama architecture, byte-level BPE vocabulary) turned into
//! a Hugging Face model directory that this crate and `transformers` both load.
//!
//! Reading and dequantisation (F32, F16, Q4_0/1, Q5_0/1, Q8_0, k-quants) are candle-core's; this
//! module maps names, undoes llama.cpp's rotary row permutation of `attn_q`/`attn_k`, and
//! rebuilds `tokenizer.json`, `tokenizer_config.json` (with the chat template) and
//! `generation_config.json` from the metadata. Weights are written in float32: the dequantised
//! values are exact there, so the directory computes what the GGUF file computes.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device};
use serde_json::{json, Map, Value as Json};

use crate::error::{Error, Result};
use crate::io;
use crate::tokenizer::{TOKENIZER_CONFIG, TOKENIZER_FILE};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// What an import wrote, for the caller to report.
#[derive(Debug, Clone)]
pub struct Imported {
    pub dir: PathBuf,
    pub name: Option<String>,
    pub parameters: usize,
    /// GGUF tensor type name -> number of tensors stored in it (e.g. `Q4_1` -> 210).
    pub tensor_types: Vec<(String, usize)>,
    pub vocab_size: usize,
    pub layers: usize,
}

fn gguf_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Gguf {
        path: path.to_owned(),
        msg: msg.to_string(),
    }
}

/// Typed access to the metadata, with errors that name the key.
struct Meta<'a> {
    path: &'a Path,
    map: &'a HashMap<String, Value>,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| Error::invalid(self.path, key, "missing from the GGUF metadata"))
    }

    fn bad(&self, key: &str, what: &str) -> Error {
        Error::invalid(self.path, key, format!("expected {what}"))
    }

    fn int(&self, key: &str) -> Result<Option<i64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::U8(x) => *x as i64,
            Value::I8(x) => *x as i64,
            Value::U16(x) => *x as i64,
            Value::I16(x) => *x as i64,
            Value::U32(x) => *x as i64,
            Value::I32(x) => *x as i64,
            Value::U64(x) => i64::try_from(*x).map_err(|_| self.bad(key, "an integer"))?,
            Value::I64(x) => *x,
            _ => return Err(self.bad(key, "an integer")),
        };
        Ok(Some(n))
    }

    fn req_int(&self, key: &str) -> Result<i64> {
        self.require(key)?;
        let n = self.int(key)?.unwrap_or_default();
        if n <= 0 {
            return Err(Error::invalid(
                self.path,
                key,
                format!("must be > 0, got {n}"),
            ));
        }
        Ok(n)
    }

    fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x as f64)),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(_) => Err(self.bad(key, "a float")),
        }
    }

    fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.bad(key, "a string")),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(key, "a boolean")),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<&str>> {
        match self.require(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    _ => Err(self.bad(key, "an array of strings")),
                })
                .collect(),
            _ => Err(self.bad(key, "an array of strings")),
        }
    }

    fn ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::I32(x) => Ok(*x as i64),
                    Value::U32(x) => Ok(*x as i64),
                    Value::I64(x) => Ok(*x),
                    Value::U8(x) => Ok(*x as i64),
                    Value::I8(x) => Ok(*x as i64),
                    _ => Err(self.bad(key, "an array of integers")),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(self.bad(key, "an array of integers")),
        }
    }
}

/// The HF name of a GGUF tensor of the Llama graph, or `None` when it is not part of it.
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_owned());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, kind) = tail.rsplit_once('.')?;
    let module = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{module}.{kind}"))
}

/// Undoes llama.cpp's permutation of the rows of a Q or K projection (weight or bias).
///
/// llama.cpp stores each head's rows interleaved (pairs `(i, i + head_dim/2)` adjacent) for its
/// RoPE kernel; HF keeps the halves apart. Row `h*d + t*d/2 + j` of the HF tensor is row
/// `h*d + 2j + t` of the GGUF one.
fn unpermute_rows(data: &[f32], n_head: usize, row_len: usize) -> Vec<f32> {
    let rows = data.len() / row_len;
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for t in 0..2 {
            for j in 0..half {
                let dst = h * head_dim + t * half + j;
                let src = h * head_dim + 2 * j + t;
                out[dst * row_len..(dst + 1) * row_len]
                    .copy_from_slice(&data[src * row_len..(src + 1) * row_len]);
            }
        }
    }
    out
}

/// The `config.json` of the model, from the `llama.*` metadata.
fn model_config(meta: &Meta, vocab: usize, tied: bool, bias: bool, tok: &Specials) -> Result<Json> {
    let hidden = meta.req_int("llama.embedding_length")?;
    let heads = meta.req_int("llama.attention.head_count")?;
    let kv_heads = meta.int("llama.attention.head_count_kv")?.unwrap_or(heads);
    if kv_heads < 1 || heads % kv_heads != 0 {
        return Err(Error::invalid(
            meta.path,
            "llama.attention.head_count_kv",
            format!("{kv_heads} key/value heads do not divide the {heads} heads"),
        ));
    }
    if hidden % heads != 0 {
        return Err(Error::invalid(
            meta.path,
            "llama.attention.head_count",
            format!("{heads} heads do not divide the width {hidden}"),
        ));
    }
    let head_dim = meta
        .int("llama.attention.key_length")?
        .unwrap_or(hidden / heads);
    if head_dim < 2 || head_dim % 2 != 0 {
        return Err(Error::invalid(
            meta.path,
            "llama.attention.key_length",
            format!("head size {head_dim} is not a positive even number (RoPE rotates pairs)"),
        ));
    }
    if let Some(kind) = meta.string("llama.rope.scaling.type")? {
        if kind != "none" {
            return Err(Error::invalid(
                meta.path,
                "llama.rope.scaling.type",
                format!("RoPE scaling `{kind}` is not supported by the importer"),
            ));
        }
    }
    let mut cfg = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": meta.req_int("llama.feed_forward_length")?,
        "num_hidden_layers": meta.req_int("llama.block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": meta.float("llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
        "rope_theta": meta.float("llama.rope.freq_base")?.unwrap_or(10000.0),
        "max_position_embeddings": meta.int("llama.context_length")?.unwrap_or(2048),
        "tie_word_embeddings": tied,
        "attention_bias": bias,
        "mlp_bias": false,
        "torch_dtype": "float32",
    });
    let obj = cfg.as_object_mut().expect("object literal");
    for (key, id) in [
        ("bos_token_id", tok.bos),
        ("eos_token_id", tok.eos),
        ("pad_token_id", tok.pad),
    ] {
        if let Some(id) = id {
            obj.insert(key.into(), json!(id));
        }
    }
    Ok(cfg)
}

/// Special token ids from `tokenizer.ggml.*_token_id`, checked against the vocabulary.
struct Specials {
    bos: Option<i64>,
    eos: Option<i64>,
    pad: Option<i64>,
    unk: Option<i64>,
}

impl Specials {
    fn read(meta: &Meta, vocab: usize) -> Result<Self> {
        let id = |key: &str| -> Result<Option<i64>> {
            match meta.int(key)? {
                Some(i) if i < 0 || i as usize >= vocab => Err(Error::invalid(
                    meta.path,
                    key,
                    format!("token id {i} is outside the vocabulary of {vocab}"),
                )),
                other => Ok(other),
            }
        };
        Ok(Specials {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
        })
    }
}

/// `tokenizer.json` and `tokenizer_config.json` for a byte-level BPE (`tokenizer.ggml.model` =
/// `gpt2`) vocabulary.
fn tokenizer_files(meta: &Meta, tok: &Specials) -> Result<(Json, Json)> {
    let model = meta.string("tokenizer.ggml.model")?.unwrap_or("");
    if model != "gpt2" {
        return Err(Error::invalid(
            meta.path,
            "tokenizer.ggml.model",
            format!("`{model}` is not supported (only byte-level BPE, `gpt2`)"),
        ));
    }
    // llama.cpp's pre-tokenizer names; the ones listed split digits one by one before the
    // GPT-2 regex (their vocabularies have no multi-digit tokens).
    let pre = meta.string("tokenizer.ggml.pre")?.unwrap_or("default");
    let digits = match pre {
        "smollm" | "starcoder" | "refact" | "codeshell" => true,
        "gpt-2" | "default" => false,
        other => {
            return Err(Error::invalid(
                meta.path,
                "tokenizer.ggml.pre",
                format!(
                    "pre-tokenizer `{other}` is not supported \
                     (supported: smollm, starcoder, refact, codeshell, gpt-2, default)"
                ),
            ))
        }
    };
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let merges = meta.strings("tokenizer.ggml.merges")?;
    let types = meta
        .ints("tokenizer.ggml.token_type")?
        .unwrap_or_else(|| vec![1; tokens.len()]);
    if types.len() != tokens.len() {
        return Err(Error::invalid(
            meta.path,
            "tokenizer.ggml.token_type",
            format!("{} entries for {} tokens", types.len(), tokens.len()),
        ));
    }
    let mut vocab = Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, (&token, &kind)) in tokens.iter().zip(&types).enumerate() {
        if vocab.insert(token.to_owned(), json!(id)).is_some() {
            return Err(Error::invalid(
                meta.path,
                "tokenizer.ggml.tokens",
                format!("token `{token}` appears twice (second at id {id})"),
            ));
        }
        if kind == TOKEN_CONTROL || kind == TOKEN_USER_DEFINED {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": kind == TOKEN_USER_DEFINED,
                "special": kind == TOKEN_CONTROL,
            }));
        }
    }
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = if digits {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level.clone()]})
    } else {
        byte_level.clone()
    };
    let name = |id: Option<i64>| id.map(|i| tokens[i as usize].to_owned());
    let add_bos = meta
        .boolean("tokenizer.ggml.add_bos_token")?
        .unwrap_or(false);
    let post_processor = match (add_bos, name(tok.bos)) {
        (true, Some(bos)) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos.clone(): {"id": bos, "ids": [tok.bos], "tokens": [bos]}},
        }),
        _ => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                    "use_regex": true}),
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    let mut config = Map::new();
    config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    config.insert("add_bos_token".into(), json!(add_bos));
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    if let Some(n) = meta.int("llama.context_length")? {
        config.insert("model_max_length".into(), json!(n));
    }
    for (key, id) in [
        ("bos_token", tok.bos),
        ("eos_token", tok.eos),
        ("pad_token", tok.pad),
        ("unk_token", tok.unk),
    ] {
        if let Some(t) = name(id) {
            config.insert(key.into(), json!(t));
        }
    }
    if let Some(template) = meta.string("tokenizer.chat_template")? {
        config.insert("chat_template".into(), json!(template));
    }
    Ok((tokenizer, Json::Object(config)))
}

/// Imports `input` (a GGUF file) into the HF directory `out`, which must not exist yet. The
/// directory appears complete or not at all: everything is written next to it first.
pub fn import(input: &Path, out: &Path) -> Result<Imported> {
    if out.exists() {
        return Err(Error::Usage(format!(
            "{} already exists; give a new directory to import into",
            out.display()
        )));
    }
    let file = File::open(input).map_err(|e| Error::io(input, e))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| gguf_err(input, e))?;
    let meta = Meta {
        path: input,
        map: &content.metadata,
    };
    let arch = meta.string("general.architecture")?.unwrap_or("");
    if arch != "llama" {
        return Err(Error::UnsupportedArchitecture {
            path: input.to_owned(),
            arch: format!("general.architecture = {arch}"),
            supported: "llama",
        });
    }
    let vocab = meta.strings("tokenizer.ggml.tokens")?.len();
    let tok = Specials::read(&meta, vocab)?;
    let (tokenizer, tokenizer_config) = tokenizer_files(&meta, &tok)?;
    let tied = !content.tensor_infos.contains_key("output.weight");
    let bias = content.tensor_infos.contains_key("blk.0.attn_q.bias");
    let config = model_config(&meta, vocab, tied, bias, &tok)?;
    // Validated by `model_config`.
    let dim = |key: &str| config[key].as_u64().unwrap_or(0) as usize;
    let (heads, kv_heads, head_dim, layers) = (
        dim("num_attention_heads"),
        dim("num_key_value_heads"),
        dim("head_dim"),
        dim("num_hidden_layers"),
    );

    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    let mut types: HashMap<String, usize> = HashMap::new();
    let mut parameters = 0;
    for gguf_name in names {
        let hf = hf_name(gguf_name).ok_or_else(|| {
            gguf_err(
                input,
                format!("tensor `{gguf_name}` is not part of the Llama graph this importer maps"),
            )
        })?;
        let info = &content.tensor_infos[gguf_name];
        *types.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
        let q = content
            .tensor(&mut reader, gguf_name, &Device::Cpu)
            .map_err(|e| gguf_err(input, format!("tensor `{gguf_name}`: {e}")))?;
        let shape = q.shape().dims().to_vec();
        let data = q
            .dequantize(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| gguf_err(input, format!("tensor `{gguf_name}`: {e}")))?;
        let row_len = if shape.len() == 2 { shape[1] } else { 1 };
        // `blk.N.<module>.<weight|bias>`; the row permutation needs rows = heads x head size.
        let q_heads = match gguf_name.split('.').nth(2) {
            Some("attn_q") => Some(heads),
            Some("attn_k") => Some(kv_heads),
            _ => None,
        };
        let data = match q_heads {
            Some(n) if shape[0] != n * head_dim => {
                let dims = |rows: usize| {
                    std::iter::once(rows)
                        .chain(shape.iter().skip(1).copied())
                        .map(|d| d as i64)
                        .collect()
                };
                return Err(Error::TensorShape {
                    path: input.to_owned(),
                    key: gguf_name.clone(),
                    expected: dims(n * head_dim),
                    got: dims(shape[0]),
                });
            }
            Some(n) => unpermute_rows(&data, n, row_len),
            None => data,
        };
        parameters += data.len();
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push((hf, safetensors::Dtype::F32, shape, bytes));
    }

    let staging = next_files::atomic::Staging::new(out)?;
    let dir = staging.path();
    io::write_raw_safetensors(&dir.join("model.safetensors"), &tensors)?;
    let json = next_files::json::write;
    json(&dir.join("config.json"), &config)?;
    json(&dir.join(TOKENIZER_FILE), &tokenizer)?;
    json(&dir.join(TOKENIZER_CONFIG), &tokenizer_config)?;
    let mut generation = Map::new();
    for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if let Some(v) = config.get(key) {
            generation.insert(key.into(), v.clone());
        }
    }
    json(
        &dir.join("generation_config.json"),
        &Json::Object(generation),
    )?;
    // The tokenizer must load as written, or the directory is useless.
    crate::Tokenizer::load(dir)?;
    staging.publish(next_files::atomic::Existing::Refuse)?;
    let mut tensor_types: Vec<(String, usize)> = types.into_iter().collect();
    tensor_types.sort();
    Ok(Imported {
        dir: out.to_owned(),
        name: meta.string("general.name")?.map(str::to_owned),
        parameters,
        tensor_types,
        vocab_size: vocab,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's `permute` (convert_hf_to_gguf.py), to check that ours inverts it.
    fn permute(data: &[f32], n_head: usize, row_len: usize) -> Vec<f32> {
        let rows = data.len() / row_len;
        let (d, half) = (rows / n_head, rows / n_head / 2);
        let mut out = vec![0f32; data.len()];
        for h in 0..n_head {
            for t in 0..2 {
                for j in 0..half {
                    let src = h * d + t * half + j;
                    let dst = h * d + 2 * j + t;
                    out[dst * row_len..(dst + 1) * row_len]
                        .copy_from_slice(&data[src * row_len..(src + 1) * row_len]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        for (heads, head_dim, row_len) in [(1, 4, 1), (2, 4, 3), (3, 8, 5)] {
            let data: Vec<f32> = (0..heads * head_dim * row_len).map(|i| i as f32).collect();
            let stored = permute(&data, heads, row_len);
            assert_ne!(
                stored, data,
                "a permutation that moves nothing tests nothing"
            );
            assert_eq!(unpermute_rows(&stored, heads, row_len), data);
        }
    }

    /// Writes a GGUF with a two-token vocabulary, the given `llama.*` integers and tensors of
    /// the given (rows, columns), then imports it and returns the error text.
    fn import_error(ints: &[(&str, u32)], tensors: &[(&str, (usize, usize))]) -> String {
        use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gguf");
        let mut meta: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String("llama".into())),
            ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
            ),
            ("tokenizer.ggml.merges".into(), Value::Array(vec![])),
        ];
        meta.extend(ints.iter().map(|(k, v)| (k.to_string(), Value::U32(*v))));
        let qs: Vec<(&str, QTensor)> = tensors
            .iter()
            .map(|(name, shape)| {
                let t = candle_core::Tensor::zeros(*shape, DType::F32, &Device::Cpu).unwrap();
                (*name, QTensor::quantize(&t, GgmlDType::F32).unwrap())
            })
            .collect();
        let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> = qs.iter().map(|(k, q)| (*k, q)).collect();
        let mut file = File::create(&path).unwrap();
        gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
        drop(file);
        let out = dir.path().join("out");
        let err = import(&path, &out).expect_err("a bad file must not import");
        assert!(!out.exists());
        err.to_string()
    }

    #[test]
    fn inconsistent_heads_fail_with_the_key_at_fault() {
        let dims = [
            ("llama.embedding_length", 8),
            ("llama.feed_forward_length", 8),
            ("llama.block_count", 1),
            ("llama.attention.head_count", 2),
        ];
        let with = |extra: &[(&'static str, u32)]| [&dims[..], extra].concat();
        let q = |rows| vec![("blk.0.attn_q.weight", (rows, 8))];
        for (ints, tensors, needle) in [
            (
                with(&[("llama.attention.head_count_kv", 0)]),
                vec![],
                "key `llama.attention.head_count_kv`: 0 key/value heads",
            ),
            (
                with(&[("llama.attention.head_count_kv", 3)]),
                vec![],
                "key `llama.attention.head_count_kv`: 3 key/value heads",
            ),
            (
                with(&[("llama.attention.key_length", 3)]),
                vec![],
                "key `llama.attention.key_length`: head size 3",
            ),
            (
                with(&[]),
                q(6),
                "tensor `blk.0.attn_q.weight` has shape [6, 8], expected [8, 8]",
            ),
        ] {
            let err = import_error(&ints, &tensors);
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn names_map_to_hf_checkpoint_keys() {
        for (gguf, hf) in [
            ("token_embd.weight", Some("model.embed_tokens.weight")),
            (
                "blk.12.attn_q.weight",
                Some("model.layers.12.self_attn.q_proj.weight"),
            ),
            (
                "blk.0.attn_k.bias",
                Some("model.layers.0.self_attn.k_proj.bias"),
            ),
            (
                "blk.3.ffn_down.weight",
                Some("model.layers.3.mlp.down_proj.weight"),
            ),
            (
                "blk.3.ffn_norm.weight",
                Some("model.layers.3.post_attention_layernorm.weight"),
            ),
            ("output.weight", Some("lm_head.weight")),
            ("rope_freqs.weight", None),
            ("blk.x.attn_q.weight", None),
        ] {
            assert_eq!(hf_name(gguf).as_deref(), hf, "{gguf}");
        }
    }
}
