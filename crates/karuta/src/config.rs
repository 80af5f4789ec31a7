//! Loading and checking the configuration file.
//!
//! karuta reads chihaya's YAML schema as is: everything lives under a root key
//! `chihaya:` (or `karuta:`), durations use Go's syntax, absent keys take
//! chihaya's code defaults. The file goes through three steps:
//!
//! 1. `${VAR}` / `${VAR:-default}` references are replaced from the environment
//!    (comment lines are left alone);
//! 2. serde-saphyr parses the YAML into a generic value;
//! 3. the value is deserialized into [`TrackerConfig`], and every hook's and the
//!    store's options are checked by their drivers in the [`Registry`].
//!
//! Every error names the file, the dotted key and what is wrong, on one line.
//! Unknown keys are not errors (chihaya ignores them), but each is logged as a
//! warning, because an unknown key is usually a typo.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tracker::config::{ConfigDuration, parse_listen_addr};
use tracker::{ConfigError, LogicConfig, Options, Registry};

/// The example configuration shipped in `dist/`, built into the binary so
/// `karuta` starts with no file at all.
pub const EXAMPLE_CONFIG: &str = include_str!("../../../dist/example_config.yaml");

/// Where the configuration comes from; kept so a reload reads the same source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// The built-in example (`dist/example_config.yaml`).
    Embedded,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::Embedded => f.write_str("<built-in example config>"),
        }
    }
}

/// A configuration problem, ready to print: `file: key: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {detail}")]
pub struct ConfigFileError {
    pub source_name: String,
    /// The key (or `line N`) and what is wrong with it.
    pub detail: String,
}

impl ConfigFileError {
    pub fn new(source: &ConfigSource, detail: impl Into<String>) -> Self {
        let detail: String = detail.into();
        // One line, whatever the underlying error printed.
        let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
        ConfigFileError {
            source_name: source.to_string(),
            detail,
        }
    }

    /// A driver's or key's error, in the file it came from.
    pub fn with_key(source: &ConfigSource, e: ConfigError) -> Self {
        ConfigFileError::new(source, e.to_string())
    }
}

/// The whole configuration (what is under `chihaya:`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct TrackerConfig {
    /// How often clients should announce.
    pub announce_interval: ConfigDuration,
    /// How often clients may announce.
    pub min_announce_interval: ConfigDuration,
    /// Where `/metrics` is served; empty disables it.
    pub metrics_addr: String,
    /// The HTTP frontend; absent disables it.
    pub http: Option<frontend_http::HttpConfig>,
    /// The UDP frontend; absent disables it.
    pub udp: Option<frontend_udp::UdpConfig>,
    pub storage: StorageConfig,
    /// Hooks run before the reply, in order.
    pub prehooks: Option<Vec<HookConfig>>,
    /// Hooks run after the reply, in order.
    pub posthooks: Option<Vec<HookConfig>>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        let logic = LogicConfig::default();
        TrackerConfig {
            announce_interval: ConfigDuration(logic.announce_interval),
            min_announce_interval: ConfigDuration(logic.min_announce_interval),
            metrics_addr: String::new(),
            http: None,
            udp: None,
            storage: StorageConfig::default(),
            prehooks: None,
            posthooks: None,
        }
    }
}

/// The longest interval a reply can state (BEP 15 carries it in 32 bits).
pub const MAX_INTERVAL: Duration = Duration::from_secs(u32::MAX as u64);

fn check_listen_addr(addr: &str, key: &str) -> Result<(), ConfigError> {
    parse_listen_addr(addr)
        .map(drop)
        .map_err(|m| ConfigError::new(key, m))
}

/// `storage:`: which store, and its options.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct StorageConfig {
    pub name: String,
    pub config: serde_json::Value,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            name: storage_memory::NAME.into(),
            config: serde_json::Value::Null,
        }
    }
}

/// One entry of `prehooks:` or `posthooks:`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct HookConfig {
    pub name: String,
    #[serde(default)]
    pub options: serde_json::Value,
}

/// A configuration that parsed and whose every driver accepted its options.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedConfig {
    pub source: ConfigSource,
    /// `chihaya` or `karuta`: the root key the file used (for key paths).
    pub root: &'static str,
    pub tracker: TrackerConfig,
}

impl LoadedConfig {
    pub fn logic_config(&self) -> LogicConfig {
        LogicConfig {
            announce_interval: self.tracker.announce_interval.0,
            min_announce_interval: self.tracker.min_announce_interval.0,
        }
    }

    /// The store's options, with the key path errors should name.
    pub fn storage_options(&self) -> Options {
        Options::new(
            self.tracker.storage.config.clone(),
            format!("{}.storage.config", self.root),
        )
        .in_file(self.source.to_string())
    }

    /// `(name, key of the name, options)` for each configured hook of a phase.
    pub fn hooks(&self, phase: HookPhase) -> Vec<(String, String, Options)> {
        let (key, list) = match phase {
            HookPhase::Pre => ("prehooks", &self.tracker.prehooks),
            HookPhase::Post => ("posthooks", &self.tracker.posthooks),
        };
        list.iter()
            .flatten()
            .enumerate()
            .map(|(i, h)| {
                let at = format!("{}.{key}[{i}]", self.root);
                let options = Options::new(h.options.clone(), format!("{at}.options"))
                    .in_file(self.source.to_string());
                (h.name.clone(), format!("{at}.name"), options)
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPhase {
    Pre,
    Post,
}

/// Reads, parses and checks a configuration, building nothing.
pub fn load(source: &ConfigSource, registry: &Registry) -> Result<LoadedConfig, ConfigFileError> {
    let text = match source {
        ConfigSource::Embedded => EXAMPLE_CONFIG.to_owned(),
        ConfigSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| ConfigFileError::new(source, format!("cannot read the file: {e}")))?,
    };
    parse(source, &text, registry)
}

/// [`load`], and the configuration must serve something: what the binary
/// starts, reloads and checks with `check-config`. A configuration with no
/// frontend would start a process that listens on nothing and says nothing.
pub fn load_to_serve(
    source: &ConfigSource,
    registry: &Registry,
) -> Result<LoadedConfig, ConfigFileError> {
    let c = load(source, registry)?;
    let t = &c.tracker;
    let http = t
        .http
        .as_ref()
        .is_some_and(|h| !h.addr.is_empty() || !h.https_addr.is_empty());
    let udp = t.udp.as_ref().is_some_and(|u| !u.addr.is_empty());
    if !http && !udp {
        return Err(ConfigFileError::with_key(
            source,
            ConfigError::new(
                c.root,
                format!(
                    "no frontend: set {root}.http.addr (or {root}.http.https_addr) or {root}.udp.addr; karuta would listen on nothing",
                    root = c.root
                ),
            ),
        ));
    }
    Ok(c)
}

/// Parses and checks configuration text (see [`load`]), expanding `${VAR}`
/// from the process environment.
pub fn parse(
    source: &ConfigSource,
    text: &str,
    registry: &Registry,
) -> Result<LoadedConfig, ConfigFileError> {
    parse_with_env(source, text, registry, |name| std::env::var(name).ok())
}

/// [`parse`] with the environment given as a lookup function.
pub fn parse_with_env(
    source: &ConfigSource,
    text: &str,
    registry: &Registry,
    env: impl Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigFileError> {
    let text = expand_env(text, env).map_err(|e| ConfigFileError::new(source, e))?;
    let loaded = parse_document(source, &text)?;
    validate(&loaded, registry).map_err(|e| ConfigFileError::with_key(source, e))?;
    Ok(loaded)
}

/// Parses configuration text into its typed form and checks the tracker's own
/// keys, leaving the store's and hooks' options to their drivers.
/// No environment expansion happens here.
pub fn parse_document(source: &ConfigSource, text: &str) -> Result<LoadedConfig, ConfigFileError> {
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
        let rendered = e.to_string();
        // The first line is the message, possibly prefixed with "error:" and
        // its own location; the location is given once, here.
        let mut message = rendered.lines().next().unwrap_or("invalid YAML").trim();
        message = message.strip_prefix("error:").unwrap_or(message).trim();
        let at = match e.location() {
            Some(l) => {
                let prefix = format!("line {} column {}:", l.line(), l.column());
                message = message
                    .strip_prefix(prefix.as_str())
                    .unwrap_or(message)
                    .trim();
                format!(" at line {} column {}", l.line(), l.column())
            }
            None => String::new(),
        };
        ConfigFileError::new(source, format!("invalid YAML{at}: {message}"))
    })?;
    let serde_json::Value::Object(mut top) = value else {
        return Err(ConfigFileError::new(
            source,
            "expected a mapping with a `chihaya:` or `karuta:` root key",
        ));
    };
    let root = match (top.contains_key("chihaya"), top.contains_key("karuta")) {
        (true, true) => {
            return Err(ConfigFileError::new(
                source,
                "both `chihaya:` and `karuta:` root keys: keep one",
            ));
        }
        (true, false) => "chihaya",
        (false, true) => "karuta",
        (false, false) => {
            return Err(ConfigFileError::new(
                source,
                "missing the `chihaya:` (or `karuta:`) root key",
            ));
        }
    };
    let body = top.remove(root).unwrap_or_default();
    for other in top.keys() {
        tracing::warn!(file = %source, key = %other, "unknown top-level configuration key ignored");
    }
    let tracker: TrackerConfig = Options::new(body, root)
        .in_file(source.to_string())
        .deserialize()
        .map_err(|e| ConfigFileError::with_key(source, e))?;
    let loaded = LoadedConfig {
        source: source.clone(),
        root,
        tracker,
    };
    validate_tracker(&loaded).map_err(|e| ConfigFileError::with_key(source, e.within(root)))?;
    Ok(loaded)
}

/// The tracker's own keys (relative to the root key).
fn validate_tracker(c: &LoadedConfig) -> Result<(), ConfigError> {
    let t = &c.tracker;
    if t.announce_interval.0 > MAX_INTERVAL {
        return Err(ConfigError::new(
            "announce_interval",
            "must be at most 4294967295s (what a reply can carry)",
        ));
    }
    if t.announce_interval.0.is_zero() {
        return Err(ConfigError::new(
            "announce_interval",
            "must be greater than zero",
        ));
    }
    if t.min_announce_interval.0 > t.announce_interval.0 {
        return Err(ConfigError::new(
            "min_announce_interval",
            "must not be longer than announce_interval",
        ));
    }
    check_listen_addr(&t.metrics_addr, "metrics_addr")?;
    if let Some(http) = &t.http {
        http.validate().map_err(|e| e.within("http"))?;
    }
    if let Some(udp) = &t.udp {
        udp.validate().map_err(|e| e.within("udp"))?;
    }
    Ok(())
}

/// The store's and hooks' names and options, by their drivers.
fn validate(c: &LoadedConfig, registry: &Registry) -> Result<(), ConfigError> {
    let t = &c.tracker;
    registry.stores().validate(
        &t.storage.name,
        &format!("{}.storage.name", c.root),
        &c.storage_options(),
    )?;
    for phase in [HookPhase::Pre, HookPhase::Post] {
        for (name, name_key, options) in c.hooks(phase) {
            registry.hooks().validate(&name, &name_key, &options)?;
        }
    }
    Ok(())
}

/// Replaces `${VAR}` and `${VAR:-default}` in the text, except in comments;
/// `$${` stands for a literal `${`. The value is inserted as text, like
/// `envsubst` does: quote the reference (`"${VAR}"`) where the value may
/// contain YAML syntax. A variable that is unset and has no default is an error
/// naming it and its line.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let code_end = comment_start(line);
        expand_line(&line[..code_end], n + 1, &lookup, &mut out)?;
        out.push_str(&line[code_end..]);
    }
    Ok(out)
}

/// Where a YAML comment starts in `line` (a `#` at the start or after
/// whitespace, outside quotes), or the line's length.
fn comment_start(line: &str) -> usize {
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut prev_blank = true;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if double => escaped = true,
            '"' if !single => double = !double,
            '\'' if !double => single = !single,
            '#' if !single && !double && prev_blank => return i,
            _ => {}
        }
        prev_blank = c.is_whitespace();
    }
    line.len()
}

fn expand_line(
    code: &str,
    line_no: usize,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), String> {
    let mut rest = code;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after_dollar = &rest[start + 1..];
        if let Some(after) = after_dollar.strip_prefix("${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(after) = after_dollar.strip_prefix('{') else {
            out.push('$');
            rest = after_dollar;
            continue;
        };
        let end = after
            .find('}')
            .ok_or_else(|| format!("line {line_no}: unterminated ${{ in environment reference"))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "line {line_no}: invalid environment variable name {name:?}"
            ));
        }
        match (lookup(name), default) {
            // Like the shell's `:-`, an empty value also takes the default.
            (Some(v), None) => out.push_str(&v),
            (Some(v), Some(_)) if !v.is_empty() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "line {line_no}: environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(())
}

/// Expands `$VAR` and `${VAR}` in a path given on the command line, as chihaya
/// does for `--config`; unset variables expand to nothing.
pub fn expand_path(path: &str) -> PathBuf {
    let mut out = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.peek() == Some(&'}') {
            chars.next();
        }
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&std::env::var(&name).unwrap_or_default());
        }
    }
    Path::new(&out).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        let env = |k: &str| match k {
            "PORT" => Some("7000".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            expand_env("a: \"${PORT}\"\n", env).unwrap(),
            "a: \"7000\"\n"
        );
        assert_eq!(
            expand_env("a: ${NOPE:-x}${PORT}\n", env).unwrap(),
            "a: x7000\n"
        );
        assert_eq!(expand_env("a: ${EMPTY:-d}\n", env).unwrap(), "a: d\n");
        assert_eq!(expand_env("a: ${EMPTY}\n", env).unwrap(), "a: \n");
        assert_eq!(
            expand_env("# ${NOPE}\nb: $5\n", env).unwrap(),
            "# ${NOPE}\nb: $5\n"
        );
        let e = expand_env("x: 1\na: ${NOPE}\n", env).unwrap_err();
        assert!(
            e.starts_with("line 2: environment variable NOPE is not set"),
            "{e}"
        );
        assert!(expand_env("a: ${PORT\n", env).is_err());
        assert!(expand_env("a: ${BAD NAME}\n", env).is_err());
    }
}
