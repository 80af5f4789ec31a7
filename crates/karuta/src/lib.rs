//! The karuta tracker as a library: configuration, wiring, signals, CLI.
//!
//! The `karuta` binary is `cli::main_with(default_registry())`. A company that
//! compiles its own middleware in does the same with its hooks added to the
//! registry (see `examples/custom_prehook.rs`):
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let registry = karuta::default_registry();
//!     // registry.register_hook("my hook", |options: MyOptions| Ok(Arc::new(MyHook::new(options)) as _));
//!     karuta::cli::main_with(registry)
//! }
//! ```

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod e2e;
pub mod metrics;
pub mod migrate;
pub mod observe;
pub mod ops;
pub mod server;

pub use server::Tracker;

/// A registry with every built-in hook and store under its chihaya name.
pub fn default_registry() -> tracker::Registry {
    let mut registry = tracker::Registry::new();
    storage_memory::register(&mut registry);
    storage_redis::register(&mut registry);
    middleware::register(&mut registry);
    privtrak::register(&mut registry);
    registry
}
