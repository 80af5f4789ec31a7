//! Builds hooks and stores by their chihaya names from their YAML options.
//!
//! The binary registers the built-in drivers (`memory`, `client approval`, …);
//! a company that compiles its own hooks in registers theirs the same way. A
//! driver declares a typed config; the registry deserializes the options into
//! it, so every driver's errors name the exact key that is wrong, and a config
//! can be checked without starting anything. Hooks and stores are two tables
//! of the same [`Drivers`] type, so both kinds are registered, checked and
//! built by one body of code.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config_error::join_key;
use crate::{ConfigError, Hook, PeerStore};

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

/// The drivers of one kind (hooks, or stores) by name. One table serves both
/// kinds: they differ only in what a driver builds and in the word an
/// unknown name is reported with.
pub struct Drivers<T> {
    /// `hook` or `storage`, for "unknown hook \"x\"".
    kind: &'static str,
    drivers: BTreeMap<String, Driver<T>>,
}

impl<T: Send + 'static> Drivers<T> {
    fn new(kind: &'static str) -> Self {
        Drivers {
            kind,
            drivers: BTreeMap::new(),
        }
    }

    /// Registers a driver under `name`; a later registration of the same name wins.
    pub fn register<C: DriverConfig>(
        &mut self,
        name: &str,
        build: impl Fn(C) -> Result<T, ConfigError> + Send + Sync + 'static,
    ) {
        self.register_async(name, move |c: C| std::future::ready(build(c)));
    }

    /// Registers a driver whose construction awaits I/O (connecting, fetching
    /// keys, restoring a backup).
    pub fn register_async<C, F>(
        &mut self,
        name: &str,
        build: impl Fn(C) -> F + Send + Sync + 'static,
    ) where
        C: DriverConfig,
        F: Future<Output = Result<T, ConfigError>> + Send + 'static,
    {
        self.drivers.insert(name.to_owned(), Driver::new(build));
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.drivers.keys().map(String::as_str)
    }

    /// Checks a driver's name and options without building anything.
    /// `name_key` is where the name was found, for an unknown name.
    pub fn validate(
        &self,
        name: &str,
        name_key: &str,
        options: &Options,
    ) -> Result<(), ConfigError> {
        (self.lookup(name, name_key)?.validate)(options)
    }

    /// Builds the driver `name` from its options.
    pub async fn build(
        &self,
        name: &str,
        name_key: &str,
        options: &Options,
    ) -> Result<T, ConfigError> {
        (self.lookup(name, name_key)?.build)(options).await
    }

    fn lookup(&self, name: &str, name_key: &str) -> Result<&Driver<T>, ConfigError> {
        self.drivers.get(name).ok_or_else(|| {
            let known: Vec<String> = self.names().map(|k| format!("{k:?}")).collect();
            ConfigError::new(
                name_key,
                format!(
                    "unknown {} {name:?} (known: {})",
                    self.kind,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })
    }
}

impl<T> fmt::Debug for Drivers<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.drivers.keys()).finish()
    }
}

/// The hook and store drivers known by name.
#[derive(Debug)]
pub struct Registry {
    hooks: Drivers<Arc<dyn Hook>>,
    stores: Drivers<Arc<dyn PeerStore>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            hooks: Drivers::new("hook"),
            stores: Drivers::new("storage"),
        }
    }
}

impl Registry {
    /// An empty registry; the `karuta` crate offers one with the built-ins.
    pub fn new() -> Self {
        Self::default()
    }

    /// The hook drivers (`prehooks:` and `posthooks:` names).
    pub fn hooks(&self) -> &Drivers<Arc<dyn Hook>> {
        &self.hooks
    }

    /// The store drivers (`storage.name`).
    pub fn stores(&self) -> &Drivers<Arc<dyn PeerStore>> {
        &self.stores
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
        self.hooks.register(name, build);
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
        self.hooks.register_async(name, build);
    }

    /// Registers a store under `name`; a later registration of the same name wins.
    pub fn register_store<C: DriverConfig>(
        &mut self,
        name: &str,
        build: impl Fn(C) -> Result<Arc<dyn PeerStore>, ConfigError> + Send + Sync + 'static,
    ) {
        self.stores.register(name, build);
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
        self.stores.register_async(name, build);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FnHook;
    use serde::Deserialize;

    #[derive(Deserialize)]
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

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register_hook("limit", |c: Limit| {
            let _ = c.name;
            Ok(Arc::new(FnHook::new()) as Arc<dyn Hook>)
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
            r.hooks()
                .build("limit", "k", &opts(serde_json::json!({"max": 3})))
                .await
                .is_ok()
        );
        assert_eq!(r.hooks().names().collect::<Vec<_>>(), ["limit"]);
    }

    #[test]
    fn errors_name_the_key() {
        let r = registry();
        let e = r
            .hooks()
            .validate("limit", "k", &opts(serde_json::json!({"max": "x"})))
            .unwrap_err();
        assert_eq!(e.key, "chihaya.prehooks[0].options.max");
        let e = r
            .hooks()
            .validate("limit", "k", &opts(serde_json::json!({"max": 0})))
            .unwrap_err();
        assert_eq!(e.key, "chihaya.prehooks[0].options.max");
        assert_eq!(e.message, "must be at least 1");
        let e = r
            .hooks()
            .validate("limit", "k", &opts(serde_json::Value::Null))
            .unwrap_err();
        assert_eq!(e.key, "chihaya.prehooks[0].options");
        assert!(e.message.contains("max"), "{}", e.message);
        let e = r
            .hooks()
            .validate(
                "nope",
                "chihaya.prehooks[0].name",
                &opts(serde_json::Value::Null),
            )
            .unwrap_err();
        assert_eq!(e.key, "chihaya.prehooks[0].name");
        assert_eq!(e.message, "unknown hook \"nope\" (known: \"limit\")");
    }

    #[tokio::test]
    async fn stores_share_the_table() {
        let mut r = registry();
        r.register_store_async("slow", |c: Limit| async move {
            Err::<Arc<dyn PeerStore>, _>(ConfigError::new("max", format!("{} is too slow", c.max)))
        });
        let options = Options::new(serde_json::json!({"max": 2}), "chihaya.storage.config");
        let e = r
            .stores()
            .build("slow", "chihaya.storage.name", &options)
            .await
            .err()
            .unwrap();
        assert_eq!(
            e.key, "chihaya.storage.config.max",
            "build errors are placed in the section"
        );
        assert_eq!(e.message, "2 is too slow");
        let e = r
            .stores()
            .validate("limit", "chihaya.storage.name", &options)
            .unwrap_err();
        assert_eq!(e.key, "chihaya.storage.name");
        assert_eq!(e.message, "unknown storage \"limit\" (known: \"slow\")");
        assert_eq!(r.hooks().names().collect::<Vec<_>>(), ["limit"]);
        assert_eq!(
            format!("{r:?}"),
            "Registry { hooks: [\"limit\"], stores: [\"slow\"] }"
        );
    }
}
