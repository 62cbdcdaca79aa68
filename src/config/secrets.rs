//! Secrets the config points to: token files, read when the config is applied.

use std::path::Path;

use super::Error;

/// Reads a secret (a token) from `path`, trimmed; `key` names the config key in errors.
pub fn read_secret(path: &Path, key: &str) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Invalid {
        origin: path.display().to_string(),
        key: key.to_string(),
        reason: format!("cannot read the token: {e}"),
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(Error::Invalid {
            origin: path.display().to_string(),
            key: key.to_string(),
            reason: "the token file is empty".into(),
        });
    }
    Ok(token)
}
