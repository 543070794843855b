//! The registry: verifiers by name, and which verifier judges a row given its `data_source`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::python::{self, PythonReward, RewardFn};
use crate::{
    code::CodeVerifier, countdown::Countdown, exact::Exact, math::MathVerifier, Error, Result,
    Verifier,
};

/// What a config names to judge rows: a registered verifier (`math`, or one a team registered
/// from its own crate) or a Python reward function (`FILE:NAME`, told apart by the colon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Verifier(String),
    Python(RewardFn),
}

impl std::str::FromStr for Target {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.contains(':') {
            s.parse().map(Target::Python)
        } else if s.is_empty() {
            Err(Error::Config(
                "empty verifier name (a verifier, or FILE:NAME of a Python function)".into(),
            ))
        } else {
            Ok(Target::Verifier(s.to_string()))
        }
    }
}

/// Verifiers by name plus the `data_source` → verifier mapping.
#[derive(Clone)]
pub struct Registry {
    verifiers: BTreeMap<String, Arc<dyn Verifier>>,
    /// Explicit mapping from a data source to a verifier name (checked first).
    sources: BTreeMap<String, String>,
    /// The verifier of every row no explicit mapping names (a `[reward] fn` for all rows).
    fallback: Option<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("verifiers", &self.verifiers.keys().collect::<Vec<_>>())
            .field("sources", &self.sources)
            .field("fallback", &self.fallback)
            .finish()
    }
}

/// Substrings of a `data_source` that select a verifier when no explicit mapping matches
/// (`openai/gsm8k` → math, `countdown` → countdown, `openai_humaneval` → code).
const DEFAULT_RULES: &[(&str, &str)] = &[
    ("countdown", "countdown"),
    // Every other reasoning-gym task this project generates has a number for answer.
    ("reasoning-gym/", "math"),
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
            fallback: None,
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

    /// Judges every row that no [`Registry::map_source`] mapping names with `verifier`,
    /// instead of the built-in `data_source` rules.
    pub fn set_fallback(&mut self, verifier: &str) -> Result<()> {
        self.get(verifier)?;
        self.fallback = Some(verifier.to_string());
        Ok(())
    }

    /// Applies a config's reward choices: `all` judges every row not named in `sources`;
    /// `sources` maps a `data_source` to its own target. Each distinct Python function starts
    /// once (its workers shared by the sources that name it); it must load, or this fails
    /// naming file and function.
    pub fn configure(
        &mut self,
        all: Option<&Target>,
        sources: &BTreeMap<String, Target>,
        opts: &python::Options,
    ) -> Result<()> {
        let mut started: BTreeMap<RewardFn, String> = BTreeMap::new();
        let mut resolve = |reg: &mut Registry, t: &Target| -> Result<String> {
            match t {
                Target::Verifier(name) => {
                    reg.get(name)?;
                    Ok(name.clone())
                }
                Target::Python(f) => {
                    if let Some(name) = started.get(f) {
                        return Ok(name.clone());
                    }
                    let v = Arc::new(PythonReward::start(f.clone(), opts.clone())?);
                    let name = v.name().to_string();
                    reg.register(v);
                    started.insert(f.clone(), name.clone());
                    Ok(name)
                }
            }
        };
        for (source, t) in sources {
            let name = resolve(self, t)?;
            self.map_source(source, &name)?;
        }
        if let Some(t) = all {
            let name = resolve(self, t)?;
            self.set_fallback(&name)?;
        }
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

    /// The verifier for a row's `data_source`: the explicit mapping, else the fallback, else a
    /// verifier of that name, else the default rules.
    pub fn for_source(&self, source: &str) -> Result<Arc<dyn Verifier>> {
        if let Some(name) = self.sources.get(source).or(self.fallback.as_ref()) {
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
