//! Configuration: reads the TOML file, validates it, and resolves it into a [`Config`]
//! (names turned into ids, defaults of DESIGN.md §2 filled in).
//!
//! * `raw`: the file as written (serde structs with spans);
//! * `validate`: every check; all errors are collected, each as
//!   `FILE:LINE:COL: <object> '<name>': field '<field>': <what is wrong>; <what to do>`;
//! * `model`: the validated types;
//! * `describe`: [`Config::describe`], the resolved configuration as text for `xwan check`
//!   (not to be confused with `crate::planner` or `xwan_common::plan`: the data plane's plan).
//!
//! To add an option: a field in `raw`, its type in `model`, its checks in `validate`, a line
//! in `describe`, and a test in `agent/tests/config_errors.rs`.

mod describe;
mod diag;
mod model;
mod raw;
mod validate;

use std::path::Path;

pub use diag::{ConfigError, ConfigErrors, Warning};
pub use model::*;

/// Reads and validates the configuration file at `path`. Messages name the file as given.
pub fn load(path: &Path) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &file),
        Err(e) => Err(ConfigErrors {
            errors: vec![ConfigError {
                file,
                position: None,
                object: None,
                field: None,
                message: format!("cannot read the configuration: {e}"),
            }],
        }),
    }
}

/// The control socket of the agent running the configuration at `path`: its `[agent]
/// control_socket`, or the default when the file does not say (or cannot be read as TOML:
/// the agent reports what is wrong with it).
pub fn control_socket_of(path: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let table: toml::Table = text.parse().unwrap_or_default();
    let socket = (table.get("agent").and_then(|a| a.get("control_socket")))
        .and_then(|s| s.as_str())
        .unwrap_or(DEFAULT_CONTROL_SOCKET);
    std::path::PathBuf::from(socket)
}

/// Validates configuration `text`; `file_name` names it in messages.
pub fn parse(text: &str, file_name: &str) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    validate::parse(text, file_name)
}
