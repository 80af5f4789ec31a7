//! The `karuta` binary: the library's command line with the built-in hooks and stores.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    karuta::cli::main_with(karuta::default_registry())
}
