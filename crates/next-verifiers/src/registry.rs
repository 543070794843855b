//! The registry: verifiers by name, and which verifier judges a row given its `data_source`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{
    code::CodeVerifier, countdown::Countdown, exact::Exact, math::MathVerifier, Error, Result,
    Verifier,
};

/// Verifiers by name plus the `data_source` → verifier mapping.
#[derive(Clone)]
pub struct Registry {
    verifiers: BTreeMap<String, Arc<dyn Verifier>>,
    /// Explicit mapping from a data source to a verifier name (checked first).
    sources: BTreeMap<String, String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("verifiers", &self.verifiers.keys().collect::<Vec<_>>())
            .field("sources", &self.sources)
            .finish()
    }
}

/// Substrings of a `data_source` that select a verifier when no explicit mapping matches
/// (`openai/gsm8k` → math, `countdown` → countdown, `openai_humaneval` → code).
const DEFAULT_RULES: &[(&str, &str)] = &[
    ("countdown", "countdown"),
    ("humaneval", "code"),
    ("mbpp", "code"),
    ("code", "code"),
    ("arith", "exact"),
    ("exact", "exact"),
    ("gsm", "math"),
    ("math", "math"),
    ("aime", "math"),
    ("amc", "math"),
];

impl Default for Registry {
    fn default() -> Self {
        let mut r = Registry {
            verifiers: BTreeMap::new(),
            sources: BTreeMap::new(),
        };
        r.register(Arc::new(MathVerifier::default()));
        r.register(Arc::new(Countdown));
        r.register(Arc::new(Exact));
        r.register(Arc::new(CodeVerifier::default()));
        r
    }
}

impl Registry {
    /// Adds (or replaces) a verifier under its name.
    pub fn register(&mut self, v: Arc<dyn Verifier>) {
        self.verifiers.insert(v.name().to_string(), v);
    }

    /// Maps a `data_source` to a verifier by name (a config's `[verifiers.sources]` table).
    pub fn map_source(&mut self, source: &str, verifier: &str) -> Result<()> {
        self.get(verifier)?;
        self.sources
            .insert(source.to_string(), verifier.to_string());
        Ok(())
    }

    pub fn names(&self) -> Vec<&str> {
        self.verifiers.keys().map(String::as_str).collect()
    }

    /// The verifier called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Verifier>> {
        self.verifiers
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownVerifier {
                name: name.to_string(),
                available: self.names().join(", "),
            })
    }

    /// The verifier for a row's `data_source`: the explicit mapping, else the default rules.
    pub fn for_source(&self, source: &str) -> Result<Arc<dyn Verifier>> {
        if let Some(name) = self.sources.get(source) {
            return self.get(name);
        }
        if self.verifiers.contains_key(source) {
            return self.get(source);
        }
        let lower = source.to_ascii_lowercase();
        match DEFAULT_RULES.iter().find(|(pat, _)| lower.contains(pat)) {
            Some((_, name)) => self.get(name),
            None => Err(Error::Config(format!(
                "no verifier for data_source `{source}`: map it in the config (available verifiers: {})",
                self.names().join(", ")
            ))),
        }
    }
}
