//! The names PEFT gives a LoRA adapter's files and tensors, written once for every reader and
//! writer of adapters (the model, the trajectory store, the predictors).

/// The adapter's configuration file.
pub const CONFIG: &str = "adapter_config.json";
/// The adapter's weights.
pub const WEIGHTS: &str = "adapter_model.safetensors";
/// What PEFT puts before a module path in tensor names.
pub const PREFIX: &str = "base_model.model.";

/// The two factors of a LoRA branch: `A` (`[r, in]`) and `B` (`[out, r]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    A,
    B,
}

/// The tensor name of a module's factor: `base_model.model.<module>.lora_A.weight`.
pub fn key(module: &str, factor: Factor) -> String {
    stem_key(&format!("{PREFIX}{module}"), factor)
}

/// The tensor name of a factor under a stem that already has the prefix
/// (`base_model.model.<module>`, as [`split_key`] returns it).
pub fn stem_key(stem: &str, factor: Factor) -> String {
    let f = match factor {
        Factor::A => "A",
        Factor::B => "B",
    };
    format!("{stem}.lora_{f}.weight")
}

/// Splits a LoRA tensor name into its stem (everything before `.lora_A`/`.lora_B`, prefix
/// included) and factor; accepts PEFT's named-adapter form `.lora_A.<adapter>.weight`.
pub fn split_key(name: &str) -> Option<(&str, Factor)> {
    if !name.ends_with(".weight") {
        return None;
    }
    let (stem_end, factor) = match (name.find(".lora_A."), name.find(".lora_B.")) {
        (Some(i), _) => (i, Factor::A),
        (None, Some(i)) => (i, Factor::B),
        (None, None) => return None,
    };
    Some((&name[..stem_end], factor))
}

/// The module path of a tensor name this crate's [`key`] writes (`None` for anything else).
pub fn module_of(name: &str) -> Option<(&str, Factor)> {
    let rest = name.strip_prefix(PREFIX)?;
    if let Some(m) = rest.strip_suffix(".lora_A.weight") {
        Some((m, Factor::A))
    } else {
        rest.strip_suffix(".lora_B.weight").map(|m| (m, Factor::B))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let k = key("model.layers.0.mlp.up_proj", Factor::B);
        assert_eq!(
            k,
            "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"
        );
        assert_eq!(
            module_of(&k),
            Some(("model.layers.0.mlp.up_proj", Factor::B))
        );
        assert_eq!(
            split_key(&k),
            Some(("base_model.model.model.layers.0.mlp.up_proj", Factor::B))
        );
        assert_eq!(
            split_key("base_model.model.x.lora_A.default.weight"),
            Some(("base_model.model.x", Factor::A))
        );
        assert_eq!(split_key("model.norm.weight"), None);
        assert_eq!(module_of("base_model.model.x.bias"), None);
    }
}
