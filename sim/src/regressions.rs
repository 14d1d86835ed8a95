//! `sim/regressions.toml`: scenario and seed pairs that once failed, re-run
//! by a test so that a fixed bug stays fixed.

use serde::Deserialize;

/// The file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regressions {
    /// The cases.
    #[serde(default)]
    pub case: Vec<Case>,
}

/// One case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Scenario path relative to the `sim/` directory.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// `shoal` or `foca`.
    #[serde(rename = "impl", default = "default_impl")]
    pub implementation: String,
    /// What it once broke, for the reader.
    #[serde(default)]
    pub note: String,
}

fn default_impl() -> String {
    "shoal".to_string()
}

/// Parses the file's text.
pub fn parse(text: &str) -> Result<Regressions, toml::de::Error> {
    toml::from_str(text)
}
