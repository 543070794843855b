//! The candidates of a jump decoded together: a jump's branch on every linear layer it
//! changes, each batch row with its own coefficient λ_b ([`crate::Batch::with_jump_scale`]),
//! so that the λ candidates of one prediction share one pass over the prompts.

use std::collections::BTreeMap;

use tch::{Device, Tensor};

use super::layers::{FactorBranch, JumpBranch, Linear};
use super::Model;
use crate::error::{Error, Result};

/// A matrix's change as rank-1 terms `(σ, u, v)`: `Σ σ u vᵀ`.
pub type RankOneTerms = Vec<(f64, Vec<f64>, Vec<f64>)>;

/// A jump: per module path (`model.layers.0.mlp.up_proj`), its rank-1 terms.
pub type JumpTerms = [(String, RankOneTerms)];

/// One module's line of factor-space candidates: candidate λ has the LoRA factors
/// `B + λ dB` (`[out, r]`) and `A + λ dA` (`[r, in]`), row-major, with the scaling `s`.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorLine {
    pub r: usize,
    pub scaling: f64,
    pub b: Vec<f64>,
    pub a: Vec<f64>,
    pub db: Vec<f64>,
    pub da: Vec<f64>,
}

/// A factor-space jump: per module path, its line of candidates.
pub type FactorTerms = [(String, FactorLine)];

/// What [`Model::set_jump`] adds to the linear layers.
#[derive(Debug, Clone, Copy)]
pub enum Jump<'a> {
    /// Row b runs with the adapter plus λ_b times the rank-1 terms: exactly the rank-(r+k)
    /// adapter that `next-predictor`'s extension writes for λ_b.
    Added(&'a JumpTerms),
    /// Row b runs with the adapter of candidate λ_b (row with λ_b = 0: the adapter loaded).
    Factor(&'a FactorTerms),
}

impl Model {
    /// Adds a jump branch to the linear layers `jump` names; rows of a batch then run with
    /// their own candidate λ_b ([`crate::Batch::with_jump_scale`]). Replaces any jump set
    /// before. Refuses a module the model does not have or a shape it does not have.
    pub fn set_jump(&mut self, jump: Jump) -> Result<()> {
        self.clear_jump();
        let device = self.device;
        match jump {
            Jump::Added(terms) => {
                self.set_branches(terms, |name, lin, t| added(name, lin, t, device))
            }
            Jump::Factor(terms) => {
                self.set_branches(terms, |name, lin, t| factor(name, lin, t, device))
            }
        }
    }

    /// Removes the jump branches.
    pub fn clear_jump(&mut self) {
        for (_, lin) in self.linears_mut() {
            lin.jump = None;
        }
    }

    fn set_branches<T>(
        &mut self,
        terms: &[(String, T)],
        build: impl Fn(&str, &Linear, &T) -> Result<Option<JumpBranch>>,
    ) -> Result<()> {
        let mut by: BTreeMap<&str, &T> = terms.iter().map(|(m, t)| (m.as_str(), t)).collect();
        let built: Result<()> = self.linears_mut().into_iter().try_for_each(|(name, lin)| {
            if let Some(t) = by.remove(name.as_str()) {
                lin.jump = build(&name, lin, t)?;
            }
            Ok(())
        });
        if let Err(e) = built {
            self.clear_jump();
            return Err(e);
        }
        if let Some(m) = by.keys().next() {
            self.clear_jump();
            return Err(Error::Usage(format!(
                "the jump names module `{m}`, which this model does not have"
            )));
        }
        Ok(())
    }
}

/// A `[rows, cols]` f32 tensor on `device` from row-major f64 values.
fn matrix(values: &[f64], rows: i64, cols: i64, device: Device) -> Tensor {
    let v: Vec<f32> = values.iter().map(|x| *x as f32).collect();
    Tensor::from_slice(&v).view([rows, cols]).to_device(device)
}

fn added(name: &str, lin: &Linear, t: &RankOneTerms, device: Device) -> Result<Option<JumpBranch>> {
    if t.is_empty() {
        return Ok(None);
    }
    let (out, inp) = (lin.weight.size()[0], lin.weight.size()[1]);
    if t.iter()
        .any(|(_, u, v)| u.len() as i64 != out || v.len() as i64 != inp)
    {
        return Err(Error::Usage(format!(
            "the jump for `{name}` does not have its shape [{out}, {inp}]"
        )));
    }
    let k = t.len() as i64;
    // U = [σ_j u_j] column j, V = [v_j] row j.
    let mut u = vec![0f64; (out * k) as usize];
    for (j, (sigma, uu, _)) in t.iter().enumerate() {
        for (i, x) in uu.iter().enumerate() {
            u[i * k as usize + j] = sigma * x;
        }
    }
    let v: Vec<f64> = t.iter().flat_map(|(_, _, vv)| vv.iter().copied()).collect();
    Ok(Some(JumpBranch::Added {
        u: matrix(&u, out, k, device),
        v: matrix(&v, k, inp, device),
    }))
}

fn factor(name: &str, lin: &Linear, t: &FactorLine, device: Device) -> Result<Option<JumpBranch>> {
    let (out, inp) = (lin.weight.size()[0], lin.weight.size()[1]);
    let r = t.r as i64;
    let sizes = [t.b.len(), t.a.len(), t.db.len(), t.da.len()];
    let want = [out * r, r * inp, out * r, r * inp].map(|n| n as usize);
    if r == 0 || sizes != want || !t.scaling.is_finite() {
        return Err(Error::Usage(format!(
            "the factor jump for `{name}` ([{out}, {inp}]) does not have factors of rank {} \
             shaped [{out}, r] and [r, {inp}]",
            t.r
        )));
    }
    let b = matrix(&t.b, out, r, device);
    let a = matrix(&t.a, r, inp, device);
    let db = matrix(&t.db, out, r, device);
    let da = matrix(&t.da, r, inp, device);
    // A line through the adapter's own factors runs as the adapter at λ = 0; any other line
    // (scale-first's starts at (0, A₁)) leaves rows with λ = 0 to the adapter.
    let through_adapter = lin.lora.as_ref().is_some_and(|l| {
        l.scaling == t.scaling && l.a.size() == a.size() && l.a.equal(&a) && l.b.equal(&b)
    });
    Ok(Some(JumpBranch::Factor(FactorBranch {
        a: Tensor::cat(&[a, da], 0),
        b: Tensor::cat(&[b, db], 1),
        r,
        scaling: t.scaling,
        keeps_adapter_at_zero: !through_adapter,
    })))
}
