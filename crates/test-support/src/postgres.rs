//! A throwaway PostgreSQL cluster: `initdb` into a temp dir, `postgres` on a
//! free port of 127.0.0.1 with trust authentication and no Unix socket,
//! `psql` for SQL, fast and immediate stops, and a restart on the same port
//! and data dir (for tests that take the database away for a while).
//!
//! It is removed when dropped and when the test process dies: the
//! postmaster's death signal (see [`crate::process`]) is SIGQUIT, PostgreSQL's
//! immediate shutdown, and the temp dir's guardian removes the files.
//!
//! `initdb` and `postgres` refuse to run as root. As root (CI, this machine)
//! they run as the `postgres` system user, which Debian's `postgresql` package
//! creates, and the temp dir is given to that user; as anyone else they run
//! as the test's own user. The binaries are where Debian installs them, in the
//! newest `/usr/lib/postgresql/N/bin`; else where `pg_config --bindir` says;
//! else on PATH.
//!
//! Durability against a crash of the machine is traded for speed
//! (`fsync=off`), not durability against a crash of the server: a commit is
//! in the WAL, in the operating system's hands, before it is acknowledged
//! (`synchronous_commit` stays on), so an immediate stop loses no committed
//! transaction and the next start recovers it from the WAL. Benchmarks take
//! [`Postgres::start_durable`]: PostgreSQL's own defaults for durability
//! (`fsync`, `full_page_writes`) and 1 GB of shared buffers, as a site's
//! database would run.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{TempDir, free_tcp_port, process};

/// The superuser `initdb` creates, and the database every cluster has.
const USER: &str = "postgres";
const DBNAME: &str = "postgres";

/// How long a start (recovery included) or a stop may take.
const START_LIMIT: Duration = Duration::from_secs(30);
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// What `psql` may spend connecting, and on one statement.
const PSQL_CONNECT_SECS: u32 = 5;
const PSQL_STATEMENT_MS: u32 = 30_000;

/// A PostgreSQL cluster, running or (after a stop) not.
pub struct Postgres {
    bin: PathBuf,
    port: u16,
    /// The uid and gid the server runs as, when the test runs as root.
    owner: Option<(u32, u32)>,
    child: Option<Child>,
    dir: TempDir,
    /// The certificate (its own CA) when the server speaks TLS.
    tls: Option<PathBuf>,
    /// fsync on (see [`Postgres::start_durable`]).
    durable: bool,
}

impl Postgres {
    /// A new cluster in a temp dir named after `tag`, started and accepting
    /// connections.
    pub fn start(tag: &str) -> Postgres {
        Postgres::launch(tag, None, false)
    }

    /// A cluster that syncs every commit to disk (`fsync` and
    /// `full_page_writes` on, 1 GB of shared buffers): for benchmarks
    /// whose figures a site's database should reproduce.
    pub fn start_durable(tag: &str) -> Postgres {
        Postgres::launch(tag, None, true)
    }

    /// The same, also speaking TLS with a fresh self-signed certificate for
    /// `names` (see [`Postgres::ca_file`]).
    pub fn start_tls(tag: &str, names: &[&str]) -> Postgres {
        Postgres::launch(tag, Some(names), false)
    }

    /// The certificate clients trust to reach a [`Postgres::start_tls`] server.
    pub fn ca_file(&self) -> &std::path::Path {
        self.tls
            .as_deref()
            .expect("a server started with start_tls")
    }

    fn launch(tag: &str, tls: Option<&[&str]>, durable: bool) -> Postgres {
        let dir = TempDir::new(tag);
        let owner = process::running_as_root().then(postgres_user);
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("giving {:?} to the postgres user: {e}", dir.path()));
        }
        let mut pg = Postgres {
            bin: bindir().to_owned(),
            port: free_tcp_port(),
            owner,
            child: None,
            dir,
            tls: None,
            durable,
        };
        let out = pg
            .server_command("initdb")
            .arg("--pgdata")
            .arg(pg.data_dir())
            .args(["--username", USER, "--auth", "trust", "--encoding", "UTF8"])
            .args(["--locale", "C", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running initdb from {:?}: {e}", pg.bin));
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(names) = tls {
            let (cert, key) = crate::tls::SelfSigned::new(names).write(pg.dir.path());
            // The server insists: its key readable by its owner alone.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            if let Some((uid, gid)) = pg.owner {
                for f in [&cert, &key] {
                    std::os::unix::fs::chown(f, Some(uid), Some(gid)).unwrap();
                }
            }
            pg.tls = Some(cert);
        }
        pg.restart();
        pg
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &'static str {
        USER
    }

    pub fn dbname(&self) -> &'static str {
        DBNAME
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (no password: trust).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@{}:{}/{DBNAME}", self.host(), self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `sql` (one or more statements) through `psql`, stopping at the
    /// first error; the rows of the last statement, unaligned, one per line,
    /// columns separated by `|`. Panics when psql fails.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    /// [`Postgres::psql`], with psql's error output when it fails (as it does
    /// while the server is stopped).
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only"])
            .args(["--set", "ON_ERROR_STOP=1", "--host", self.host()])
            .args(["--port", &self.port.to_string(), "--username", USER])
            .args(["--dbname", DBNAME, "--command", sql])
            .env("PGCONNECT_TIMEOUT", PSQL_CONNECT_SECS.to_string())
            .env(
                "PGOPTIONS",
                format!("-c statement_timeout={PSQL_STATEMENT_MS}"),
            )
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if out.status.success() {
            let rows = String::from_utf8_lossy(&out.stdout);
            Ok(rows.strip_suffix('\n').unwrap_or(&rows).to_owned())
        } else {
            Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ))
        }
    }

    /// Whether the server was started and not stopped since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A fast shutdown (SIGINT): sessions are ended, a checkpoint is written,
    /// the server exits. Returns once it has.
    pub fn stop_fast(&mut self) {
        self.stop(libc::SIGINT);
    }

    /// An immediate shutdown (SIGQUIT): the server exits at once, as in a
    /// crash; the next start recovers from the WAL. Returns once it has.
    pub fn stop_immediate(&mut self) {
        self.stop(libc::SIGQUIT);
    }

    fn stop(&mut self, signal: i32) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        process::signal(&child, signal);
        let deadline = Instant::now() + STOP_LIMIT;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "postgres did not stop within {STOP_LIMIT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server on the same port and data dir (stopping it fast
    /// first if it runs); returns once it accepts connections.
    pub fn restart(&mut self) {
        self.stop_fast();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .unwrap();
        let mut command = self.server_command("postgres");
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            .args(if self.durable {
                ["-c", "fsync=on", "-c", "full_page_writes=on"]
            } else {
                ["-c", "fsync=off", "-c", "full_page_writes=off"]
            })
            .args([
                "-c",
                if self.durable {
                    "shared_buffers=1GB"
                } else {
                    "shared_buffers=16MB"
                },
                "-c",
                "max_connections=50",
            ])
            .args(self.tls.iter().flat_map(|cert| {
                let key = cert.with_file_name("key.pem");
                [
                    "-c".to_owned(),
                    "ssl=on".to_owned(),
                    "-c".to_owned(),
                    format!("ssl_cert_file={}", cert.display()),
                    "-c".to_owned(),
                    format!("ssl_key_file={}", key.display()),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = process::spawn_tied(command, libc::SIGQUIT)
            .unwrap_or_else(|e| panic!("starting postgres from {:?}: {e}", self.bin));
        let every = Duration::from_millis(50);
        let ready = || self.accepts_connections();
        if let Err(why) = process::wait_until_ready(&mut child, START_LIMIT, every, ready) {
            process::signal(&child, libc::SIGQUIT);
            let _ = child.wait();
            panic!("postgres did not start: {why}; its log:\n{}", self.log());
        }
        self.child = Some(child);
    }

    fn accepts_connections(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args([
                "--quiet",
                "--host",
                self.host(),
                "--port",
                &self.port.to_string(),
            ])
            .args(["--username", USER, "--dbname", DBNAME, "--timeout", "1"])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `bin/program`, run in the temp dir as the cluster's owner.
    fn server_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(self.dir.path()).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// What the server has logged, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::signal(&child, libc::SIGQUIT);
            let _ = child.wait();
        }
    }
}

/// The directory of `initdb`, `postgres`, `pg_isready` and `psql`.
fn bindir() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
        let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                has_server(&bin).then_some((version, bin))
            })
            .collect();
        debian.sort();
        if let Some((_, bin)) = debian.pop() {
            return bin;
        }
        let pg_config = Command::new("pg_config").arg("--bindir").output();
        if let Ok(out) = pg_config
            && out.status.success()
        {
            let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&bin) {
                return bin;
            }
        }
        // A link on PATH (to initdb, say) stands for the directory it points into.
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .filter(|dir| has_server(dir))
            .find_map(|dir| Some(std::fs::canonicalize(dir.join("initdb")).ok()?.parent()?.to_owned()))
            .expect("no PostgreSQL server binaries (initdb, postgres): scripts/test installs the postgresql package")
    })
}

/// The uid and gid of the `postgres` system user.
fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, USER])
            .output()
            .expect("running id");
        assert!(
            out.status.success(),
            "no {USER} system user to run PostgreSQL as root (the postgresql package creates it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a numeric id")
    };
    (id("-u"), id("-g"))
}
