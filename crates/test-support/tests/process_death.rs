//! Servers and temp dirs do not outlive a test process that is killed (as
//! nextest kills one that times out): this test runs itself again as a child
//! process that starts a redis-server and a PostgreSQL and waits, kills that
//! child with SIGKILL, and checks that both servers and their dirs are gone.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::postgres::Postgres;
use test_support::process::spawn_tied;
use test_support::redis::RedisServer;

const CHILD: &str = "TEST_SUPPORT_KILLED_CHILD";
const NAME: &str = "servers_and_dirs_go_when_the_test_process_is_killed";

#[test]
fn servers_and_dirs_go_when_the_test_process_is_killed() {
    if std::env::var_os(CHILD).is_some() {
        let redis = RedisServer::start_unix("killed-redis");
        let pg = Postgres::start("killed-pg");
        println!("started {} {}", redis.socket_path().display(), pg.port());
        println!("dir {}", pg.data_dir().display());
        std::thread::sleep(Duration::from_secs(60));
        panic!("the parent test did not kill this process");
    }

    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([NAME, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = spawn_tied(command, libc::SIGKILL).unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // libtest's "test NAME ... " may precede the first line on the same line.
    let mut next = |marker: &str| loop {
        let line = lines.next().expect("the child's output").unwrap();
        if let Some((_, rest)) = line.split_once(marker) {
            break rest.to_owned();
        }
    };
    let started = next("started ");
    let (socket, port) = started.split_once(' ').unwrap();
    let (socket, port) = (PathBuf::from(socket), port.parse::<u16>().unwrap());
    let data_dir = PathBuf::from(next("dir "));
    assert!(UnixStream::connect(&socket).is_ok());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    child.kill().unwrap();
    child.wait().unwrap();
    let dirs = [socket.parent().unwrap(), data_dir.parent().unwrap()];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let redis_gone = UnixStream::connect(&socket).is_err();
        let pg_gone = TcpStream::connect(("127.0.0.1", port)).is_err();
        let dirs_gone = dirs.iter().all(|d| !d.exists());
        if redis_gone && pg_gone && dirs_gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "10 s after the kill: redis gone {redis_gone}, postgres gone {pg_gone}, dirs gone {dirs_gone} ({dirs:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
