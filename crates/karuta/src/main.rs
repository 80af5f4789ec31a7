//! The `karuta` binary: the library's command line with the built-in hooks
//! and stores, and, on glibc, memory freed by the process handed back to the
//! kernel (`trim`).

// Denied, not forbidden: `trim` is the one exception, fenced in its module.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let _trimmer = trim::Trimmer::start();
    karuta::cli::main_with(karuta::default_registry())
}

/// Memory the process has freed, handed back to the kernel (glibc only).
///
/// Why: glibc's malloc keeps what a process frees in its arenas and gives
/// memory back to the kernel only from the top of a heap. A flood of
/// connections allocates for each hyper's read buffer and header buffer
/// (8 KiB each, hyper has no smaller setting) and the connection's task,
/// all freed when it closes; but a few allocations made during the flood
/// outlive it and pin the top of each heap, so the freed memory stays
/// resident. After ten rounds of 4,000 HTTP connections RSS stayed at
/// 116 MiB, idle 21 MiB, with 0.4 MiB of it in use
/// (`crates/karuta/tests/http_floods.rs`). No buffer of karuta's outlives
/// its connection: this is the allocator's retention, so the remedy is here,
/// for the binary only (a program that embeds the library keeps its own
/// allocator and policy).
///
/// `malloc_trim(0)` gives back the free pages anywhere in every arena, every
/// `trim::INTERVAL`, from a thread of its own. It walks each arena's free
/// lists under that arena's lock: some 20 µs when there is nothing to give
/// back, 5 to 15 ms once after a flood of 4,000 connections (mostly the
/// kernel unmapping 90 MB), while a thread allocating in the same arena
/// waits.
///
/// The only unsafe code of the binary, one foreign function of the C
/// library the process links anyway; `frontend-udp/src/batch.rs` holds the
/// library's.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod trim {
    use std::sync::mpsc::{self, RecvTimeoutError, Sender};
    use std::thread::JoinHandle;
    use std::time::Duration;

    /// How often freed memory is handed back: a flood's memory is back within
    /// about this long after it ends.
    pub const INTERVAL: Duration = Duration::from_millis(500);

    unsafe extern "C" {
        // SAFETY: glibc's `int malloc_trim(size_t pad)` (malloc.h), with
        // that signature; it takes no pointer, may be called from any
        // thread at any time, and only releases pages malloc holds free.
        safe fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }

    /// The trimming thread; stopped (at once) and joined when dropped.
    pub struct Trimmer {
        stop: Option<Sender<()>>,
        thread: Option<JoinHandle<()>>,
    }

    impl Trimmer {
        pub fn start() -> Trimmer {
            let (stop, stopped) = mpsc::channel::<()>();
            let thread = std::thread::Builder::new()
                .name("karuta-trim".into())
                .spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                        malloc_trim(0);
                    }
                })
                .ok();
            Trimmer {
                stop: Some(stop),
                thread,
            }
        }
    }

    impl Drop for Trimmer {
        fn drop(&mut self) {
            drop(self.stop.take());
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
