//! Tokenizers: HF `tokenizer.json` through the `tokenizers` crate, `tokenizer_config.json`
//! (special tokens, chat template rendered with minijinja), and the character-level tokenizer
//! of the tiny embedded models, saved as a real `tokenizer.json`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// The special tokens of the character-level tokenizer, in id order.
pub const CHAR_SPECIALS: [&str; 3] = ["<pad>", "<eos>", "<unk>"];

/// One message of a chat, as chat templates expect it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A tokenizer with its special tokens and chat template.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `tokenizer_config.json` as read (written back on save).
    config: Map<String, Value>,
    chat_template: Option<String>,
    pub eos_token: Option<String>,
    pub eos_token_id: Option<i64>,
    pub pad_token_id: Option<i64>,
    pub bos_token: Option<String>,
    path: PathBuf,
}

/// Special tokens appear as a string or as an `AddedToken` object with `content`.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        path: path.to_owned(),
        msg: e.to_string(),
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json` and `chat_template.jinja`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.exists() {
            return Err(Error::missing(path, "tokenizer (tokenizer.json)"));
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| tok_err(&path, e))?;
        let cfg_path = dir.join(TOKENIZER_CONFIG);
        let config: Map<String, Value> = if cfg_path.exists() {
            match next_files::json::read::<Value>(&cfg_path)? {
                Value::Object(m) => m,
                _ => {
                    return Err(Error::invalid(
                        &cfg_path,
                        "<root>",
                        "expected a JSON object",
                    ))
                }
            }
        } else {
            Map::new()
        };
        let template_path = dir.join(CHAT_TEMPLATE_FILE);
        let chat_template = if template_path.exists() {
            Some(
                std::fs::read_to_string(&template_path)
                    .map_err(|e| Error::io(&template_path, e))?,
            )
        } else {
            match config.get("chat_template") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                // A list of named templates: use the default one.
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                Some(_) => {
                    return Err(Error::invalid(
                        &cfg_path,
                        "chat_template",
                        "expected a string",
                    ))
                }
            }
        };
        Self::from_parts(inner, config, chat_template, path)
    }

    fn from_parts(
        inner: tokenizers::Tokenizer,
        config: Map<String, Value>,
        chat_template: Option<String>,
        path: PathBuf,
    ) -> Result<Self> {
        let eos_token = token_string(config.get("eos_token"));
        let bos_token = token_string(config.get("bos_token"));
        let id_of = |key: &str, tok: &Option<String>| -> Result<Option<i64>> {
            match tok {
                None => Ok(None),
                Some(t) => inner.token_to_id(t).map(|i| Some(i as i64)).ok_or_else(|| {
                    Error::invalid(
                        path.with_file_name(TOKENIZER_CONFIG),
                        key,
                        format!("token `{t}` is not in the vocabulary"),
                    )
                }),
            }
        };
        let eos_token_id = id_of("eos_token", &eos_token)?;
        let pad_token_id = id_of("pad_token", &token_string(config.get("pad_token")))?;
        id_of("bos_token", &bos_token)?;
        Ok(Tokenizer {
            inner,
            config,
            chat_template,
            eos_token,
            eos_token_id,
            pad_token_id,
            bos_token,
            path,
        })
    }

    /// A character-level tokenizer: `<pad>`, `<eos>`, `<unk>`, then one token per character of
    /// `alphabet` (in order, duplicates removed).
    pub fn char_level(alphabet: &str) -> Result<Self> {
        use tokenizers::models::bpe::BPE;
        let path = PathBuf::from("<char tokenizer>");
        let mut vocab = tokenizers::models::bpe::Vocab::default();
        for s in CHAR_SPECIALS {
            let id = vocab.len() as u32;
            vocab.insert(s.to_string(), id);
        }
        for c in alphabet.chars() {
            let id = vocab.len() as u32;
            vocab.entry(c.to_string()).or_insert(id);
        }
        // A BPE model with no merges splits text into characters; Fuse joins them back.
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![])
            .unk_token("<unk>".into())
            .build()
            .map_err(|e| tok_err(&path, e))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_decoder(Some(tokenizers::decoders::fuse::Fuse::new()));
        let specials: Vec<tokenizers::AddedToken> = CHAR_SPECIALS
            .iter()
            .map(|s| tokenizers::AddedToken::from(s.to_string(), true))
            .collect();
        inner.add_special_tokens(&specials);
        let config: Map<String, Value> = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "clean_up_tokenization_spaces": false,
            "model_max_length": 1_000_000,
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        Self::from_parts(inner, config, None, path)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// Token ids of `text`; `add_special_tokens` applies the post-processor (e.g. BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| tok_err(&self.path, e))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Text of `ids`; ids outside the vocabulary are an error.
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&i| {
                u32::try_from(i).map_err(|_| tok_err(&self.path, format!("invalid token id {i}")))
            })
            .collect::<Result<_>>()?;
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|e| tok_err(&self.path, e))
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Renders the chat template as transformers does (Jinja with trimmed blocks).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            Error::Template(format!(
                "{}: the tokenizer has no chat template",
                self.path.display()
            ))
        })?;
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", template)
            .map_err(|e| Error::Template(e.to_string()))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        })
        .map_err(|e| Error::Template(format!("{e:#}")))
    }

    /// Sets the chat template (written to `tokenizer_config.json` on save).
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(TOKENIZER_FILE);
        let json = self.inner.to_string(true).map_err(|e| tok_err(&path, e))?;
        next_files::atomic::write(&path, json.as_bytes())?;
        let mut config = self.config.clone();
        match &self.chat_template {
            Some(t) => config.insert("chat_template".into(), Value::String(t.clone())),
            None => config.remove("chat_template"),
        };
        Ok(next_files::json::write(
            &dir.join(TOKENIZER_CONFIG),
            &config,
        )?)
    }
}
