//! Loading: the embedded default, then the TOML file, then `PORTSIGHT__*`
//! environment variables (the `config` crate's layers), with errors that name
//! the file (or variable), the key and the reason.

use std::collections::HashMap;
use std::path::Path;

use super::{Config, DEFAULT_TOML, ENV_PREFIX, ENV_SEPARATOR, Error, one_line};

impl Config {
    /// Loads the embedded default, then `file` if given, then the process
    /// environment's `PORTSIGHT__*` variables, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, Error> {
        Config::load_with_env(file, std::env::vars().collect())
    }

    /// As [`Config::load`], for a reload of a running portsight: a file
    /// with nothing in it (no bytes, or only white space) is refused rather
    /// than read as the embedded default. Mid-reload such a file is far more
    /// likely one caught half written (an editor or a config-management
    /// tool truncating before writing) than a wish to drop every port; a
    /// comment is enough to mean the default on purpose.
    pub fn reload(file: Option<&Path>) -> Result<Config, Error> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.trim().is_empty() && path.exists() {
                return Err(Error::Syntax {
                    origin: path.display().to_string(),
                    reason:
                        "the file is empty: a reload never replaces the running config with the \
                             embedded default (to mean the default, write a comment in it)"
                            .into(),
                });
            }
        }
        Config::load(file)
    }

    /// As [`Config::load`], with the environment given (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Config, Error> {
        let origin = match file {
            Some(path) => path.display().to_string(),
            None => "embedded default".to_string(),
        };
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .collect();
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            let text = read_file(path, &origin)?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        let env_keys: Vec<(String, String)> = env
            .keys()
            .map(|k| (env_key_to_path(k), k.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .try_parsing(true)
                .source(Some(env.into_iter().collect())),
        );
        let raw = builder.build().map_err(|e| Error::Syntax {
            origin: origin.clone(),
            reason: one_line(&e.to_string()),
        })?;
        let config = decode(raw, &origin, &env_keys)?;
        config.validate().map_err(|(key, reason)| Error::Invalid {
            origin,
            key,
            reason,
        })?;
        Ok(config)
    }
}

/// The file's text, parsed on its own first so that syntax errors name it
/// with line and column.
fn read_file(path: &Path, origin: &str) -> Result<String, Error> {
    let syntax = |reason| Error::Syntax {
        origin: origin.to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| syntax(format!("cannot read: {e}")))?;
    toml::from_str::<toml::Table>(&text).map_err(|e| syntax(toml_error(&text, &e)))?;
    Ok(text)
}

/// Deserializes the merged layers; an error names the key, and the
/// variable (of `env_keys`: path, variable) when the environment set it.
fn decode(
    raw: config::Config,
    origin: &str,
    env_keys: &[(String, String)],
) -> Result<Config, Error> {
    serde_path_to_error::deserialize(raw).map_err(|e| {
        let (key, reason) = key_and_reason(e.path().to_string(), &e.inner().to_string());
        let origin = env_keys.iter().find(|(path, _)| *path == key).map_or_else(
            || origin.to_string(),
            |(_, var)| format!("environment {var}"),
        );
        Error::Invalid {
            origin,
            key,
            reason,
        }
    })
}

/// `PORTSIGHT__PROBE__INTERVAL` → `probe.interval`.
fn env_key_to_path(var: &str) -> String {
    var.trim_start_matches(ENV_PREFIX)
        .trim_start_matches(ENV_SEPARATOR)
        .split(ENV_SEPARATOR)
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(".")
}

/// The config crate words some errors with the key inside the message
/// (" for key `x`", `missing configuration field "port[0]port"`); the key is
/// reported on its own, so take it out of the reason.
fn key_and_reason(key: String, message: &str) -> (String, String) {
    let message = one_line(message);
    if let Some(rest) = message.strip_prefix("missing configuration field ") {
        let field = rest.trim_matches('"');
        let field = field.rsplit([']', '.']).next().unwrap_or(field);
        let key = if key == "." || key.is_empty() {
            field.to_string()
        } else {
            format!("{key}.{field}")
        };
        return (key, "missing, and it has no default".to_string());
    }
    match message.find(" for key `") {
        Some(i) => (key, message[..i].to_string()),
        None => (key, message),
    }
}

/// `line L, column C: message` from a TOML syntax error.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", one_line(e.message()))
        }
        None => one_line(e.message()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ListenAddress;

    #[test]
    fn embedded_default_is_the_default() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(parsed, Config::default());
        assert_eq!(
            Config::load_with_env(None, HashMap::new()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn environment_overrides() {
        let env = HashMap::from([
            ("PORTSIGHT__PROBE__INTERVAL".to_string(), "5s".to_string()),
            (
                "PORTSIGHT__DISCOVER__ENABLED".to_string(),
                "false".to_string(),
            ),
            ("PORTSIGHT__PROBE__CONCURRENCY".to_string(), "8".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ]);
        let c = Config::load_with_env(None, env).unwrap();
        assert_eq!(c.probe.interval, Duration::from_secs(5));
        assert_eq!(c.probe.concurrency, 8);
        assert!(!c.discover.enabled);
    }

    /// Loads `text` as a config file, with `env`.
    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with_env(Some(&path), env)
    }

    #[test]
    fn addresses_rules_and_urls_are_typed_once_loaded() {
        let c = load_text(
            "[web]\nlisten_address = \"127.0.0.1:9100\"\n\
             [probe_server]\nallow = [\"10.0.0.0/8:80\"]\n\
             [[peer]]\nname = \"o\"\nurl = \"http://10.77.0.9:10917\"\ntoken_file = \"/t\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.web.listen_address,
            ListenAddress::Socket("127.0.0.1:9100".parse().unwrap())
        );
        assert!(c.probe_server.allow[0].allows("10.1.2.3:80".parse().unwrap()));
        assert!(!c.probe_server.allow[0].allows("10.1.2.3:81".parse().unwrap()));
        assert_eq!(c.peer_list[0].url.authority().unwrap(), "10.77.0.9:10917");
    }

    #[test]
    fn a_bad_address_from_the_environment_names_the_variable() {
        let err = load_text("", &[("PORTSIGHT__WEB__LISTEN_ADDRESS", "nowhere")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment PORTSIGHT__WEB__LISTEN_ADDRESS: web.listen_address: \
             invalid address \"nowhere\": want IP:PORT, [IPv6]:PORT or :PORT"
        );
    }

    #[test]
    fn an_unset_probe_timeout_fits_the_interval() {
        let timeout = |text: &str| load_text(text, &[]).unwrap().probe.timeout;
        assert_eq!(
            timeout("[probe]\ninterval = \"2s\"\n"),
            Duration::from_secs(1)
        );
        assert_eq!(
            timeout("[probe]\ninterval = \"10s\"\n"),
            Duration::from_secs(2)
        );
        assert_eq!(timeout(""), Duration::from_secs(2));
        assert_eq!(
            timeout("[probe]\ninterval = \"2s\"\ntimeout = \"500ms\"\n"),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn a_set_probe_timeout_must_be_shorter_than_the_interval() {
        let env = [("PORTSIGHT__PROBE__TIMEOUT", "2s")];
        let err = load_text("[probe]\ninterval = \"2s\"\n", &env).unwrap_err();
        assert!(
            err.to_string()
                .ends_with(": probe.timeout: must be shorter than probe.interval (2s >= 2s)"),
            "{err}"
        );
        let env = [("PORTSIGHT__PROBE__INTERVAL", "2s")];
        let c = load_text("", &env).unwrap();
        assert_eq!(c.probe.timeout, Duration::from_secs(1));
    }

    #[test]
    fn env_key_paths() {
        assert_eq!(
            env_key_to_path("PORTSIGHT__PROBE__INTERVAL"),
            "probe.interval"
        );
    }
}
