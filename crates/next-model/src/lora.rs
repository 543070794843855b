//! LoRA's maths: the low-rank branch of a linear layer, `y = W x + s · B (A dropout(x))` with
//! `s = lora_alpha / r` (`/ sqrt(r)` with rsLoRA), its hyper-parameters and which layers it
//! targets. The PEFT file format is `peft.rs`; attaching adapters to a model, `model/adapter.rs`.

use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// The low-rank factors of one adapted linear layer (kept in f32 whatever the base dtype).
#[derive(Debug)]
pub struct Lora {
    /// `[r, in]`
    pub a: Tensor,
    /// `[out, r]`
    pub b: Tensor,
    pub scaling: f64,
    pub dropout: f64,
}

impl Lora {
    /// `s · B (A dropout(x))`, computed in f32 and returned in `x`'s dtype (as PEFT does).
    pub(crate) fn delta(&self, x: &Tensor, train: bool) -> Tensor {
        let kind = x.kind();
        let h = x.to_kind(Kind::Float);
        let h = if train && self.dropout > 0.0 {
            h.dropout(self.dropout, true)
        } else {
            h
        };
        (h.linear(&self.a, None::<&Tensor>)
            .linear(&self.b, None::<&Tensor>)
            * self.scaling)
            .to_kind(kind)
    }

    /// `s · B' (h ⊙ [1, λ_b]) ` with `A' = [A; V]`, `B' = [B, U / s]` and `h = A' x`: the adapter
    /// extended by a jump `U V` exactly as the rank-(r+k) adapter of `next-predictor`'s
    /// extension writes it, with each row's λ_b applied to the jump's k components. One branch
    /// for both, so a candidate costs what the adapter costs.
    pub(crate) fn delta_with_jump(
        &self,
        x: &Tensor,
        train: bool,
        u: &Tensor,
        v: &Tensor,
        scale: &Tensor,
    ) -> Tensor {
        let kind = x.kind();
        let h = x.to_kind(Kind::Float);
        let h = if train && self.dropout > 0.0 {
            h.dropout(self.dropout, true)
        } else {
            h
        };
        let (r, k) = (self.a.size()[0], v.size()[0]);
        let a = Tensor::cat(&[&self.a, v], 0);
        let b = Tensor::cat(&[&self.b, &(u / self.scaling)], 1);
        let rows = scale.size()[0];
        let per_row = Tensor::cat(
            &[
                Tensor::ones([rows, 1, r], (Kind::Float, scale.device())),
                scale.view([rows, 1, 1]).expand([rows, 1, k], false),
            ],
            2,
        );
        ((h.linear(&a, None::<&Tensor>) * per_row).linear(&b, None::<&Tensor>) * self.scaling)
            .to_kind(kind)
    }

    /// The dense update `s · B A` (`[out, in]`, f32).
    pub fn merged_delta(&self) -> Tensor {
        self.b.matmul(&self.a) * self.scaling
    }
}

/// Which linear layers get a LoRA branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetModules {
    /// Every linear layer but the LM head (PEFT's `"all-linear"`).
    AllLinear,
    /// Module names matched as PEFT does: equal to the full path or to its last components.
    List(Vec<String>),
}

impl TargetModules {
    /// PEFT's name for every linear layer but the LM head.
    pub const ALL_LINEAR: &'static str = "all-linear";

    /// From a config's list of names, where `all-linear` stands for every linear layer.
    pub fn from_names(names: &[String]) -> Self {
        if names.iter().any(|n| n == Self::ALL_LINEAR) {
            TargetModules::AllLinear
        } else {
            TargetModules::List(names.to_vec())
        }
    }

    /// Whether the layer at module path `module` is targeted.
    pub fn matches(&self, module: &str) -> bool {
        match self {
            TargetModules::AllLinear => true,
            TargetModules::List(names) => names.iter().any(|n| name_matches(n, module)),
        }
    }

    /// A listed name that matches none of `modules` (a typo, or another architecture's name).
    pub fn unmatched<'a>(&'a self, modules: &[String]) -> Option<&'a str> {
        match self {
            TargetModules::AllLinear => None,
            TargetModules::List(names) => names
                .iter()
                .find(|n| !modules.iter().any(|m| name_matches(n, m)))
                .map(String::as_str),
        }
    }
}

/// PEFT's rule: a name targets a module when it equals its path or its last components.
fn name_matches(name: &str, module: &str) -> bool {
    module == name
        || module
            .strip_suffix(name)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub r: i64,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: TargetModules,
    pub use_rslora: bool,
}

impl LoraConfig {
    /// The factor `s` multiplying `B A`.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        if self.r <= 0 {
            return Err(Error::invalid(
                path,
                "r",
                format!("must be positive, got {}", self.r),
            ));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::invalid(
                path,
                "lora_alpha",
                format!(
                    "must be positive, got {} (verl's merger writes 0: set the real alpha)",
                    self.alpha
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                path,
                "lora_dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        Ok(())
    }
}
