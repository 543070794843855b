//! The layers of the decoder: linear (with an optional LoRA branch), RMSNorm, rotary
//! embeddings, attention (GQA, Qwen3 q/k norms, KV cache) and the SwiGLU MLP, grouped into a
//! `DecoderLayer`. Architecture only: weights come from `weights.rs`.

use tch::{Kind, Tensor};

use crate::config::Config;
use crate::lora::Lora;

/// The linear layers of a decoder layer, in checkpoint order. Building, listing, saving and
/// the parameter shapes all iterate this one table.
pub(crate) const PROJECTIONS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

/// `(out, in, bias)` of projection `j` of [`PROJECTIONS`] under `c`.
pub(crate) fn projection_shape(c: &Config, j: usize) -> (i64, i64, bool) {
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let (q, kv) = (
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    );
    match j {
        Q => (q, h, c.qkv_bias),
        K | V => (kv, h, c.qkv_bias),
        O => (h, q, c.o_bias),
        GATE | UP => (f, h, c.mlp_bias),
        _ => (h, f, c.mlp_bias),
    }
}

/// A linear layer `y = x W^T + b`, optionally with a LoRA branch and a jump branch.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<Lora>,
    /// A candidate jump, with each batch row's own coefficient λ_b (see
    /// [`crate::Model::set_jump`]).
    pub jump: Option<JumpBranch>,
}

/// The jump branch of a linear layer, f32 like LoRA.
#[derive(Debug)]
pub enum JumpBranch {
    /// `λ_b U V` added to the layer and its adapter: `U = [σ_j u_j]` (`[out, k]`) and
    /// `V = [v_jᵀ]` (`[k, in]`).
    Added { u: Tensor, v: Tensor },
    /// The adapter of candidate λ_b is `s (B₀ + λ_b dB)(A₀ + λ_b dA)`.
    Factor(FactorBranch),
}

/// A factor-space candidate's branch: `h = [A₀; dA] x`, `g = h₀ + λ h_d = (A₀ + λ dA) x`, then
/// `s [B₀, dB] [g; λ g] = s (B₀ + λ dB) g` — the candidate's adapter at the cost of one adapter
/// of rank 2r, whatever each row's λ.
#[derive(Debug)]
pub struct FactorBranch {
    /// `[2r, in]`: `[A₀; dA]`.
    pub a: Tensor,
    /// `[out, 2r]`: `[B₀, dB]`.
    pub b: Tensor,
    pub r: i64,
    pub scaling: f64,
    /// False when `(B₀, A₀)` are the adapter's own factors: the branch is then the adapter for
    /// every row (λ = 0 included) and replaces it. True when the line starts elsewhere: rows
    /// with λ_b = 0 keep the adapter, the others run the branch instead.
    pub keeps_adapter_at_zero: bool,
}

impl FactorBranch {
    /// `s (B₀ + λ_b dB)(A₀ + λ_b dA) x` in f32, `[rows, T, out]`.
    fn delta(&self, x: &Tensor, scale: &Tensor) -> Tensor {
        let lambda = scale.view([-1, 1, 1]);
        let h = x.to_kind(Kind::Float).linear(&self.a, None::<&Tensor>);
        let g = h.narrow(2, 0, self.r) + h.narrow(2, self.r, self.r) * &lambda;
        let lg = &g * &lambda;
        Tensor::cat(&[g, lg], 2).linear(&self.b, None::<&Tensor>) * self.scaling
    }
}

/// Switches that change the forward pass without changing the weights.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mode<'a> {
    pub adapter: bool,
    pub train: bool,
    /// `[B]`: each row's coefficient of the jump branches (none: no jump).
    pub jump_scale: Option<&'a Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor, mode: Mode) -> Tensor {
        let y = x.linear(&self.weight, self.bias.as_ref());
        let lora = self.lora.as_ref().filter(|_| mode.adapter);
        let kind = x.kind();
        match (lora, &self.jump, mode.jump_scale) {
            (Some(l), Some(JumpBranch::Added { u, v }), Some(scale)) => {
                y + l.delta_with_jump(x, mode.train, u, v, scale)
            }
            (l, Some(JumpBranch::Added { u, v }), Some(scale)) => {
                // A jump without an adapter: λ_b Σ σ_j u_j (v_jᵀ x), in f32 like LoRA.
                let d = (x.to_kind(Kind::Float).linear(v, None::<&Tensor>)
                    * scale.view([-1, 1, 1]))
                .linear(u, None::<&Tensor>);
                let y = y + d.to_kind(kind);
                match l {
                    Some(l) => y + l.delta(x, mode.train),
                    None => y,
                }
            }
            (l, Some(JumpBranch::Factor(f)), Some(scale)) if mode.adapter => {
                let d = f.delta(x, scale);
                if !f.keeps_adapter_at_zero {
                    return y + d.to_kind(kind);
                }
                let keep = scale.eq(0.0).to_kind(Kind::Float).view([-1, 1, 1]);
                let y = y + (d * (keep.ones_like() - &keep)).to_kind(kind);
                match l {
                    Some(l) => y + l.delta(x, mode.train) * keep.to_kind(kind),
                    None => y,
                }
            }
            (Some(l), _, _) => y + l.delta(x, mode.train),
            (None, _, _) => y,
        }
    }
}

#[derive(Debug)]
pub(crate) struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    /// Normalises in f32 and casts back before the weight, as transformers does.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let h = x.to_kind(Kind::Float);
        let var = h.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let h = h * (var + self.eps).rsqrt();
        &self.weight * h.to_kind(kind)
    }
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    Tensor::cat(&[-x.narrow(3, half, half), x.narrow(3, 0, half)], 3)
}

/// Cosine and sine tables for the positions of one forward call, shaped `[B, 1, T, head_dim]`.
pub(crate) struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Rope {
    fn apply(&self, x: &Tensor) -> Tensor {
        x * &self.cos + rotate_half(x) * &self.sin
    }
}

/// One decoder layer: pre-norm attention and pre-norm MLP, each added to the residual stream.
#[derive(Debug)]
pub(crate) struct DecoderLayer {
    /// Indexed as [`PROJECTIONS`].
    pub proj: [Linear; 7],
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
    pub n_heads: i64,
    pub n_kv_heads: i64,
    pub head_dim: i64,
}

impl DecoderLayer {
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        cache: Option<(&mut Tensor, &mut Tensor, i64)>,
        mode: Mode,
    ) -> Tensor {
        let a = self.attention(&self.input_layernorm.forward(x), rope, mask, cache, mode);
        // Out of place: autograd keeps `x` for the norms' backward, so `+=` would corrupt it.
        let x = x + &a;
        let m = self.mlp(&self.post_attention_layernorm.forward(&x), mode);
        &x + &m
    }

    fn attention(
        &self,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        cache: Option<(&mut Tensor, &mut Tensor, i64)>,
        mode: Mode,
    ) -> Tensor {
        let (b, t, _) = x.size3().expect("attention input is [B, T, H]");
        let heads = |y: Tensor, n: i64, norm: &Option<RmsNorm>| {
            let y = y.view([b, t, n, self.head_dim]);
            let y = match norm {
                Some(norm) => norm.forward(&y),
                None => y,
            };
            y.transpose(1, 2)
        };
        let p = &self.proj;
        let q = heads(p[Q].forward(x, mode), self.n_heads, &self.q_norm);
        let k = heads(p[K].forward(x, mode), self.n_kv_heads, &self.k_norm);
        let v = heads(p[V].forward(x, mode), self.n_kv_heads, &None);
        let q = rope.apply(&q);
        let k = rope.apply(&k);
        let (k, v) = match cache {
            Some((kc, vc, past)) => {
                kc.narrow(2, past, t).copy_(&k);
                vc.narrow(2, past, t).copy_(&v);
                (kc.narrow(2, 0, past + t), vc.narrow(2, 0, past + t))
            }
            None => (k, v),
        };
        let groups = self.n_heads / self.n_kv_heads;
        let (k, v) = if groups > 1 {
            let expand = |y: Tensor| {
                let s = y.size();
                y.unsqueeze(2)
                    .expand([s[0], s[1], groups, s[2], s[3]], false)
                    .reshape([s[0], s[1] * groups, s[2], s[3]])
            };
            (expand(k), expand(v))
        } else {
            (k, v)
        };
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            0.0,
            mask.is_none(),
            None,
            false,
        );
        let y = y
            .transpose(1, 2)
            .reshape([b, t, self.n_heads * self.head_dim]);
        p[O].forward(&y, mode)
    }

    fn mlp(&self, x: &Tensor, mode: Mode) -> Tensor {
        let p = &self.proj;
        let g = p[GATE].forward(x, mode).silu();
        p[DOWN].forward(&(g * p[UP].forward(x, mode)), mode)
    }
}
