//! Builds hooks and stores by their chihaya names from their YAML options.
//!
//! The binary registers the built-in drivers (`memory`, `client approval`, …);
//! a company that compiles its own hooks in registers theirs the same way. A
//! driver declares a typed config; the registry deserializes the options into
//! it, so every driver's errors name the exact key that is wrong, and a config
//! can be checked without starting anything.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::{Hook, PeerStore};

/// A configuration problem: which key, and what is wrong with it.
///
/// `key` is the full dotted path (`chihaya.storage.config.gc_interval`); the
/// binary adds the file name when it reports the error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Prefixes the key with the path of the section it was found in.
    pub fn within(mut self, section: &str) -> Self {
        self.key = join_key(section, &self.key);
        self
    }
}

fn join_key(section: &str, key: &str) -> String {
    match (section.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => section.to_owned(),
        _ => format!("{section}.{key}"),
    }
}

/// A driver's raw options (the `options:` of a hook, the `config:` of a store)
/// and where in the file they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    value: serde_json::Value,
    path: String,
    file: Option<String>,
    warn_unknown: bool,
}

impl Options {
    /// `path` is the dotted key of the section (`chihaya.prehooks[0].options`).
    pub fn new(value: serde_json::Value, path: impl Into<String>) -> Self {
        Options {
            value,
            path: path.into(),
            file: None,
            warn_unknown: true,
        }
    }

    /// The same options, deserialized without warning about unknown keys.
    pub fn without_warnings(mut self) -> Self {
        self.warn_unknown = false;
        self
    }

    /// Names the file the options came from, for warnings.
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn value(&self) -> &serde_json::Value {
        &self.value
    }

    /// Deserializes into the driver's config type. A missing section counts as
    /// empty (all defaults); keys the type does not know are logged as warnings
    /// (chihaya ignores them silently, which hides typos).
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let empty = serde_json::Value::Object(Default::default());
        let value = if self.value.is_null() {
            &empty
        } else {
            &self.value
        };
        let mut unknown: Vec<String> = Vec::new();
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let de = serde_ignored::Deserializer::new(value, &mut record);
        let result: Result<T, _> = serde_path_to_error::deserialize(de);
        for key in unknown.into_iter().filter(|_| self.warn_unknown) {
            // serde_ignored shows a level of `Option` as `?`; it is not part of the key.
            let key = key
                .split('.')
                .filter(|part| *part != "?")
                .collect::<Vec<_>>()
                .join(".");
            let key = join_key(&self.path, &key);
            match &self.file {
                Some(file) => {
                    tracing::warn!(file = %file, key = %key, "unknown configuration key ignored")
                }
                None => tracing::warn!(key = %key, "unknown configuration key ignored"),
            }
        }
        result.map_err(|e| {
            let inner = e.path().to_string();
            let key = if inner == "." { String::new() } else { inner };
            ConfigError::new(join_key(&self.path, &key), e.into_inner().to_string())
        })
    }
}

/// A driver's typed configuration.
pub trait DriverConfig: DeserializeOwned + Send + 'static {
    /// Checks values the type system cannot (a zero shard count, say). The
    /// error's key is relative to the driver's section.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// What building a driver returns: a future, so drivers that need I/O to start
/// (fetching a JWK set, connecting to Redis, restoring a backup) can await it.
pub type BuildFuture<T> = Pin<Box<dyn Future<Output = Result<T, ConfigError>> + Send>>;

type Build<T> = dyn Fn(&Options) -> BuildFuture<T> + Send + Sync;
type Validate = dyn Fn(&Options) -> Result<(), ConfigError> + Send + Sync;

struct Driver<T> {
    validate: Box<Validate>,
    build: Box<Build<T>>,
}

fn parse_options<C: DriverConfig>(options: &Options) -> Result<C, ConfigError> {
    let config: C = options.deserialize()?;
    config.validate().map_err(|e| e.within(options.path()))?;
    Ok(config)
}

impl<T: Send + 'static> Driver<T> {
    fn new<C, F>(build: impl Fn(C) -> F + Send + Sync + 'static) -> Self
    where
        C: DriverConfig,
        F: Future<Output = Result<T, ConfigError>> + Send + 'static,
    {
        Driver {
            validate: Box::new(|options| parse_options::<C>(options).map(drop)),
            build: Box::new(move |options| {
                // Validation already warned about unknown keys; do not repeat it.
                let parsed = parse_options::<C>(&options.clone().without_warnings());
                let path = options.path().to_owned();
                match parsed {
                    Ok(config) => {
                        let fut = build(config);
                        Box::pin(async move { fut.await.map_err(|e| e.within(&path)) })
                    }
                    Err(e) => Box::pin(std::future::ready(Err(e))),
                }
            }),
        }
    }
}

/// The hook and store drivers known by name.
#[derive(Default)]
pub struct Registry {
    hooks: BTreeMap<String, Driver<Arc<dyn Hook>>>,
    stores: BTreeMap<String, Driver<Arc<dyn PeerStore>>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("hooks", &self.hooks.keys().collect::<Vec<_>>())
            .field("stores", &self.stores.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry; the `karuta` crate offers one with the built-ins.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a hook under `name`; a later registration of the same name wins.
    ///
    /// The factory is kept for the life of the process and called again at
    /// every reload, so a driver whose hooks must keep state across reloads
    /// (a private tracker's baselines) can hold that state in the closure and
    /// hand it to each new hook.
    pub fn register_hook<C: DriverConfig>(
        &mut self,
        name: &str,
        build: impl Fn(C) -> Result<Arc<dyn Hook>, ConfigError> + Send + Sync + 'static,
    ) {
        let driver = Driver::new(move |c: C| std::future::ready(build(c)));
        self.hooks.insert(name.to_owned(), driver);
    }

    /// Registers a hook whose construction awaits I/O.
    pub fn register_hook_async<C, F>(
        &mut self,
        name: &str,
        build: impl Fn(C) -> F + Send + Sync + 'static,
    ) where
        C: DriverConfig,
        F: Future<Output = Result<Arc<dyn Hook>, ConfigError>> + Send + 'static,
    {
        self.hooks.insert(name.to_owned(), Driver::new(build));
    }

    /// Registers a store under `name`; a later registration of the same name wins.
    pub fn register_store<C: DriverConfig>(
        &mut self,
        name: &str,
        build: impl Fn(C) -> Result<Arc<dyn PeerStore>, ConfigError> + Send + Sync + 'static,
    ) {
        let driver = Driver::new(move |c: C| std::future::ready(build(c)));
        self.stores.insert(name.to_owned(), driver);
    }

    /// Registers a store whose construction awaits I/O (connecting, say).
    pub fn register_store_async<C, F>(
        &mut self,
        name: &str,
        build: impl Fn(C) -> F + Send + Sync + 'static,
    ) where
        C: DriverConfig,
        F: Future<Output = Result<Arc<dyn PeerStore>, ConfigError>> + Send + 'static,
    {
        self.stores.insert(name.to_owned(), Driver::new(build));
    }

    pub fn hook_names(&self) -> impl Iterator<Item = &str> {
        self.hooks.keys().map(String::as_str)
    }

    pub fn store_names(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }

    /// Checks a hook's name and options without building it.
    pub fn validate_hook(
        &self,
        name: &str,
        name_key: &str,
        options: &Options,
    ) -> Result<(), ConfigError> {
        (lookup(&self.hooks, "hook", name, name_key)?.validate)(options)
    }

    pub async fn build_hook(
        &self,
        name: &str,
        name_key: &str,
        options: &Options,
    ) -> Result<Arc<dyn Hook>, ConfigError> {
        (lookup(&self.hooks, "hook", name, name_key)?.build)(options).await
    }

    /// Checks a store's name and options without building it.
    pub fn validate_store(
        &self,
        name: &str,
        name_key: &str,
        options: &Options,
    ) -> Result<(), ConfigError> {
        (lookup(&self.stores, "storage", name, name_key)?.validate)(options)
    }

    pub async fn build_store(
        &self,
        name: &str,
        name_key: &str,
        options: &Options,
    ) -> Result<Arc<dyn PeerStore>, ConfigError> {
        (lookup(&self.stores, "storage", name, name_key)?.build)(options).await
    }
}

fn lookup<'r, T>(
    drivers: &'r BTreeMap<String, Driver<T>>,
    kind: &str,
    name: &str,
    name_key: &str,
) -> Result<&'r Driver<T>, ConfigError> {
    drivers.get(name).ok_or_else(|| {
        let known: Vec<String> = drivers.keys().map(|k| format!("{k:?}")).collect();
        ConfigError::new(
            name_key,
            format!(
                "unknown {kind} {name:?} (known: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HookFuture, ReadyOrBoxed, RequestContext};
    use bittorrent::{AnnounceRequest, AnnounceResponse};
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limit {
        max: u32,
        #[serde(default)]
        name: String,
    }

    impl DriverConfig for Limit {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.max == 0 {
                return Err(ConfigError::new("max", "must be at least 1"));
            }
            Ok(())
        }
    }

    struct Nop;
    impl Hook for Nop {
        fn handle_announce<'a>(
            &'a self,
            _: &'a mut RequestContext,
            _: &'a AnnounceRequest,
            _: &'a mut AnnounceResponse,
        ) -> HookFuture<'a> {
            ReadyOrBoxed::ready(Ok(()))
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register_hook("limit", |c: Limit| {
            let _ = c.name;
            Ok(Arc::new(Nop) as Arc<dyn Hook>)
        });
        r
    }

    fn opts(v: serde_json::Value) -> Options {
        Options::new(v, "chihaya.prehooks[0].options")
    }

    #[tokio::test]
    async fn builds_by_name() {
        let r = registry();
        assert!(
            r.build_hook("limit", "k", &opts(serde_json::json!({"max": 3})))
                .await
                .is_ok()
        );
        assert_eq!(r.hook_names().collect::<Vec<_>>(), ["limit"]);
    }

    #[test]
    fn errors_name_the_key() {
        let r = registry();
        let e = r
            .validate_hook("limit", "k", &opts(serde_json::json!({"max": "x"})))
            .unwrap_err();
        assert_eq!(e.key, "chihaya.prehooks[0].options.max");
        let e = r
            .validate_hook("limit", "k", &opts(serde_json::json!({"max": 0})))
            .unwrap_err();
        assert_eq!(e.key, "chihaya.prehooks[0].options.max");
        assert_eq!(e.message, "must be at least 1");
        let e = r
            .validate_hook("limit", "k", &opts(serde_json::Value::Null))
            .unwrap_err();
        assert_eq!(e.key, "chihaya.prehooks[0].options");
        assert!(e.message.contains("max"), "{}", e.message);
        let e = r
            .validate_hook(
                "nope",
                "chihaya.prehooks[0].name",
                &opts(serde_json::Value::Null),
            )
            .unwrap_err();
        assert_eq!(e.key, "chihaya.prehooks[0].name");
        assert_eq!(e.message, "unknown hook \"nope\" (known: \"limit\")");
    }
}
