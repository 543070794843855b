//! One dataset row in verl's schema and its prompt: what `data` reads and `tasks` generates
//! (a leaf, so neither has to import the other).

use next_model::{ChatMessage, Tokenizer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A prompt: plain text, or chat messages rendered with the model's chat template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// One dataset row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub data_source: String,
    pub prompt: Prompt,
    #[serde(alias = "reward_model")]
    pub ground_truth: Value,
    #[serde(default)]
    pub extra_info: Value,
}

impl Row {
    /// The text fed to the model: chat prompts go through the chat template (with the
    /// generation prompt); text prompts are used as they are.
    pub fn render(&self, tok: &Tokenizer) -> next_model::Result<String> {
        match &self.prompt {
            Prompt::Text(t) => Ok(t.clone()),
            Prompt::Chat(m) => tok.apply_chat_template(m, true),
        }
    }
}
