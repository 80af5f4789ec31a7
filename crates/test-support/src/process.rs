//! The processes tests start (redis-server, postgres), tied to the life of the
//! test process, and signalled; the only `unsafe` of this crate is here.
//!
//! A server a test starts must not outlive the test binary: not when the test
//! panics (its owner's `Drop` kills it), and not when the binary is killed
//! (nextest's timeout, a SIGKILL), where no code runs. Linux's parent-death
//! signal (`PR_SET_PDEATHSIG`) covers the second case, but it fires when the
//! *thread* that spawned the child ends, not the process: a server started by
//! one test thread and kept in a static for the whole binary would die with
//! that thread. So every tied child is spawned by one thread that lives as
//! long as the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

type SpawnRequest = (Command, i32, Sender<io::Result<Child>>);

/// Spawns `command` so that it receives `death_signal` when the test process
/// ends, however it ends. The `Child` may be waited for and killed from any
/// thread.
pub fn spawn_tied(command: Command, death_signal: i32) -> io::Result<Child> {
    static SPAWNER: OnceLock<Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("test-support-spawner".into())
            // The sender lives in the static, so this loop (and the thread
            // the death signal is tied to) ends only with the process.
            .spawn(move || {
                for (mut command, signal, reply) in rx {
                    let _ = reply.send(spawn_with_death_signal(&mut command, signal));
                }
            })
            .expect("starting the spawner thread");
        tx
    });
    let (tx, rx) = mpsc::channel();
    spawner
        .send((command, death_signal, tx))
        .expect("the spawner thread lives as long as the process");
    rx.recv().expect("the spawner thread answers every request")
}

fn spawn_with_death_signal(command: &mut Command, signal: i32) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and calls only prctl and
    // getppid, which are async-signal-safe; it allocates nothing on success.
    // std runs it after any uid/gid change, which would clear the setting.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The test process died between fork and prctl: nobody would
            // send the signal any more.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::other("the test process is gone"));
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Polls `ready` every `every` until it holds, for at most `limit`; when it
/// does not, why: `child` exited first, or the time ran out. A server that
/// dies at start (a port taken, a bad flag) is reported at once, not after
/// the whole limit.
pub(crate) fn wait_until_ready(
    child: &mut Child,
    limit: Duration,
    every: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("it was not ready within {limit:?}"));
        }
        std::thread::sleep(every);
    }
}

/// Sends `signal` to `child`, which must not have been waited for yet (its
/// pid could then belong to another process).
pub(crate) fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid, which stays reserved for it
    // until it is waited for; callers wait only after the last signal.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Whether the test runs as root, where PostgreSQL must run as another user.
pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The resident memory (`VmRSS`) of process `pid`, in bytes; `"self"` for
/// this process. Linux only.
pub fn rss_bytes(pid: impl std::fmt::Display) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    kib * 1024
}
