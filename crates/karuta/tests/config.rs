//! Configuration: chihaya's own example files load with chihaya's meaning, and
//! each kind of mistake gives a one-line error naming the file and the key, and
//! a non-zero exit from the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use frontend_http::HttpConfig;
use frontend_udp::UdpConfig;
use karuta::config::{self, ConfigSource, TrackerConfig};
use test_support::TempDir;
use tracker::config::ConfigDuration;

/// chihaya's example files, mirrored in `tests/fixtures/chihaya/`.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chihaya")
        .join(name)
}

fn secs(s: u64) -> ConfigDuration {
    ConfigDuration(Duration::from_secs(s))
}

fn mins(m: u64) -> ConfigDuration {
    secs(m * 60)
}

/// The http and udp sections of both chihaya example files.
fn chihaya_example_frontends() -> (HttpConfig, UdpConfig) {
    let http = HttpConfig {
        addr: "0.0.0.0:6969".into(),
        https_addr: String::new(),
        tls_cert_path: String::new(),
        tls_key_path: String::new(),
        read_timeout: secs(5),
        write_timeout: secs(5),
        enable_keepalive: false,
        idle_timeout: secs(30),
        enable_request_timing: false,
        announce_routes: vec!["/announce".into()],
        scrape_routes: vec!["/scrape".into()],
        allow_ip_spoofing: false,
        real_ip_header: "x-real-ip".into(),
        max_numwant: 100,
        default_numwant: 50,
        max_scrape_infohashes: 50,
        trusted_proxies: vec![],
    };
    let udp = UdpConfig {
        addr: "0.0.0.0:6969".into(),
        max_clock_skew: secs(10),
        private_key: "paste a random string here that will be used to hmac connection IDs".into(),
        enable_request_timing: false,
        allow_ip_spoofing: false,
        max_numwant: 100,
        default_numwant: 50,
        max_scrape_infohashes: 50,
        // karuta's own keys, at their defaults.
        workers: 0,
        connection_id_lifetime: secs(120),
    };
    (http, udp)
}

#[test]
fn chihaya_example_config_loads_with_chihayas_meaning() {
    let source = ConfigSource::File(fixture("example_config.yaml"));
    let loaded =
        config::load(&source, &karuta::default_registry()).expect("chihaya's example loads");
    assert_eq!(loaded.root, "chihaya");
    let t = &loaded.tracker;
    let (http, udp) = chihaya_example_frontends();
    assert_eq!(t.announce_interval, mins(30));
    assert_eq!(t.min_announce_interval, mins(15));
    assert_eq!(t.metrics_addr, "0.0.0.0:6880");
    assert_eq!(t.http.as_ref(), Some(&http));
    assert_eq!(t.udp.as_ref(), Some(&udp));
    assert_eq!(t.storage.name, "memory");
    assert_eq!(
        t.storage.config,
        serde_json::json!({
            "gc_interval": "3m", "peer_lifetime": "31m", "shard_count": 1024,
            "prometheus_reporting_interval": "1s"
        })
    );
    // `prehooks:` with only comments under it is null: no hooks.
    assert_eq!(t.prehooks, None);
    assert_eq!(t.posthooks, None);

    // The memory store reads its section with the same meaning.
    let memory: storage_memory::MemoryConfig = loaded.storage_options().deserialize().unwrap();
    assert_eq!(
        memory,
        storage_memory::MemoryConfig {
            gc_interval: mins(3),
            peer_lifetime: mins(31),
            shard_count: 1024,
            prometheus_reporting_interval: secs(1),
            // karuta's own keys, at their defaults.
            ..storage_memory::MemoryConfig::default()
        }
    );
}

#[test]
fn chihaya_redis_example_config_parses_with_chihayas_meaning() {
    let path = fixture("example_config_redis.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let loaded = config::parse_document(&ConfigSource::File(path), &text).expect("parses");
    let t = &loaded.tracker;
    let (http, udp) = chihaya_example_frontends();
    assert_eq!(t.http.as_ref(), Some(&http));
    assert_eq!(t.udp.as_ref(), Some(&udp));
    assert_eq!(t.announce_interval, mins(30));
    assert_eq!(t.min_announce_interval, mins(15));
    assert_eq!(t.storage.name, "redis");
    assert_eq!(
        t.storage.config,
        serde_json::json!({
            "gc_interval": "3m", "peer_lifetime": "31m", "prometheus_reporting_interval": "1s",
            "redis_broker": "redis://127.0.0.1:6379/0", "redis_connect_timeout": "15s",
            "redis_read_timeout": "15s", "redis_write_timeout": "15s"
        })
    );
    assert_eq!(t.prehooks, None);
}

#[test]
fn shipped_example_is_the_embedded_default_with_chihayas_example_values() {
    let registry = karuta::default_registry();
    let embedded = config::load(&ConfigSource::Embedded, &registry).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/example_config.yaml");
    let file = config::load(&ConfigSource::File(path), &registry).unwrap();
    assert_eq!(embedded.tracker, file.tracker);
    assert_eq!(embedded.root, "karuta");
    let t = &embedded.tracker;
    assert_eq!(t.storage.name, "memory");
    assert_eq!(t.prehooks, Some(vec![]));
    // The values are chihaya's example values (but for the private key, which
    // karuta generates when empty).
    let (http, mut udp) = chihaya_example_frontends();
    udp.private_key = String::new();
    assert_eq!(t.http.as_ref(), Some(&http));
    assert_eq!(t.udp.as_ref(), Some(&udp));
}

#[test]
fn absent_keys_take_chihayas_code_defaults() {
    let text = "chihaya:\n  http:\n    addr: \":6969\"\n  udp: {}\n";
    let loaded = config::parse(&ConfigSource::Embedded, text, &karuta::default_registry()).unwrap();
    let t = &loaded.tracker;
    let http = t.http.as_ref().unwrap();
    assert_eq!(http.read_timeout, secs(2));
    assert_eq!(http.write_timeout, secs(2));
    assert_eq!(http.idle_timeout, secs(30));
    assert_eq!(http.real_ip_header, "");
    assert_eq!(
        (
            http.max_numwant,
            http.default_numwant,
            http.max_scrape_infohashes
        ),
        (100, 50, 50)
    );
    assert_eq!(http.announce_routes, vec!["/announce".to_owned()]);
    let udp = t.udp.as_ref().unwrap();
    assert_eq!(udp.addr, "");
    assert_eq!(udp.max_clock_skew, secs(10));
    assert_eq!(t.storage.name, "memory");
    assert_eq!(t.announce_interval, mins(30));
    let memory: storage_memory::MemoryConfig = loaded.storage_options().deserialize().unwrap();
    assert_eq!(memory, storage_memory::MemoryConfig::default());
    assert_eq!(memory.peer_lifetime, mins(30));

    let empty = config::parse(
        &ConfigSource::Embedded,
        "karuta: {}\n",
        &karuta::default_registry(),
    )
    .unwrap();
    assert_eq!(empty.tracker, TrackerConfig::default());
}

#[test]
fn environment_variables_are_expanded() {
    let env = |name: &str| (name == "KARUTA_TEST_NUMWANT").then(|| "77".to_owned());
    let text = "chihaya:\n  http:\n    addr: \"${KARUTA_TEST_ADDR:-127.0.0.1:7070}\" # ${UNSET_IN_COMMENT}\n    max_numwant: ${KARUTA_TEST_NUMWANT}\n  udp:\n    private_key: \"$${not a variable}\"\n";
    let loaded = config::parse_with_env(
        &ConfigSource::Embedded,
        text,
        &karuta::default_registry(),
        env,
    )
    .unwrap();
    let http = loaded.tracker.http.unwrap();
    assert_eq!(http.addr, "127.0.0.1:7070");
    assert_eq!(http.max_numwant, 77);
    assert_eq!(loaded.tracker.udp.unwrap().private_key, "${not a variable}");
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check_config(file: &Path) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_karuta"))
        .arg("check-config")
        .arg(file)
        .env_remove("RUST_LOG")
        .output()
        .expect("running karuta");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Checks `file`, which must pass; the outcome, for what else it says.
fn check_passes(file: &Path) -> Outcome {
    let out = check_config(file);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(out.stdout.contains("configuration OK"), "{}", out.stdout);
    out
}

/// Asserts a failed check whose error is one line naming the file and the key.
fn assert_one_line_error(file: &Path, key: &str, what: &str) {
    let out = check_config(file);
    assert_eq!(out.code, Some(1), "exit code; stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", out.stderr);
    let line = lines[0];
    assert!(line.starts_with("karuta: "), "{line}");
    assert!(
        line.contains(&file.display().to_string()),
        "names the file: {line}"
    );
    assert!(line.contains(key), "names {key}: {line}");
    assert!(line.contains(what), "says {what:?}: {line}");
}

#[test]
fn mistakes_give_one_line_errors_naming_file_and_key() {
    let tmp = TempDir::new("config-errors");
    let dir = tmp.path();
    let yaml = write_config(
        dir,
        "malformed.yaml",
        "chihaya:\n  http:\n    addr: [1, 2\n",
    );
    assert_one_line_error(&yaml, "line 3", "invalid YAML");

    let wrong_type = write_config(
        dir,
        "type.yaml",
        "chihaya:\n  http:\n    max_numwant: \"lots\"\n",
    );
    assert_one_line_error(&wrong_type, "chihaya.http.max_numwant", "invalid type");

    let store = write_config(
        dir,
        "store.yaml",
        "chihaya:\n  storage:\n    name: cassandra\n",
    );
    assert_one_line_error(
        &store,
        "chihaya.storage.name",
        "unknown storage \"cassandra\"",
    );

    let hook = write_config(
        dir,
        "hook.yaml",
        "karuta:\n  prehooks:\n    - name: \"no such hook\"\n",
    );
    assert_one_line_error(
        &hook,
        "karuta.prehooks[0].name",
        "unknown hook \"no such hook\"",
    );

    let duration = write_config(
        dir,
        "duration.yaml",
        "chihaya:\n  storage:\n    name: memory\n    config:\n      gc_interval: \"3 minutes\"\n",
    );
    assert_one_line_error(
        &duration,
        "chihaya.storage.config.gc_interval",
        "invalid duration",
    );

    let top = write_config(
        dir,
        "duration-top.yaml",
        "chihaya:\n  announce_interval: 30\n",
    );
    assert_one_line_error(&top, "chihaya.announce_interval", "not a duration");

    let value = write_config(
        dir,
        "value.yaml",
        "chihaya:\n  storage:\n    config:\n      shard_count: 0\n",
    );
    assert_one_line_error(
        &value,
        "chihaya.storage.config.shard_count",
        "greater than zero",
    );

    let tls = write_config(
        dir,
        "tls.yaml",
        "chihaya:\n  http:\n    https_addr: \"127.0.0.1:443\"\n",
    );
    assert_one_line_error(
        &tls,
        "chihaya.http.tls_cert_path",
        "required when https_addr is set",
    );

    let numwant = write_config(
        dir,
        "numwant.yaml",
        "chihaya:\n  udp:\n    max_numwant: 10\n    default_numwant: 20\n",
    );
    assert_one_line_error(
        &numwant,
        "chihaya.udp.default_numwant",
        "more than max_numwant",
    );

    let cap = write_config(
        dir,
        "cap.yaml",
        "chihaya:\n  http:\n    max_numwant: 100000\n",
    );
    assert_one_line_error(
        &cap,
        "chihaya.http.max_numwant",
        "more than the limit of 10000",
    );

    let env = write_config(
        dir,
        "env.yaml",
        "chihaya:\n  metrics_addr: \"${KARUTA_TEST_SURELY_UNSET_VAR}\"\n",
    );
    assert_one_line_error(&env, "line 2", "KARUTA_TEST_SURELY_UNSET_VAR is not set");

    // Nothing to listen on: a bare root key, or every address empty.
    for (name, text) in [
        ("bare.yaml", "karuta:\n"),
        (
            "silent.yaml",
            "karuta:\n  http:\n    addr: \"\"\n  udp:\n    addr: \"\"\n",
        ),
    ] {
        let file = write_config(dir, name, text);
        assert_one_line_error(&file, "karuta.http.addr", "no frontend");
        assert_one_line_error(&file, "karuta.udp.addr", "listen on nothing");
    }

    // Files a configuration names are read by check-config too.
    let missing_list = write_config(
        dir,
        "missing-list.yaml",
        "karuta:\n  udp:\n    addr: \"127.0.0.1:6969\"\n  prehooks:\n    - name: torrent approval\n      options:\n        whitelist_file: /nonexistent/t.txt\n",
    );
    assert_one_line_error(
        &missing_list,
        "karuta.prehooks[0].options.whitelist_file",
        "cannot read /nonexistent/t.txt",
    );
    let missing_passkeys = write_config(
        dir,
        "missing-passkeys.yaml",
        "karuta:\n  udp:\n    addr: \"127.0.0.1:6969\"\n  prehooks:\n    - name: passkey approval\n      options:\n        file: /nonexistent/passkeys\n",
    );
    assert_one_line_error(
        &missing_passkeys,
        "karuta.prehooks[0].options.file",
        "cannot read /nonexistent/passkeys",
    );
    let missing_cert = write_config(
        dir,
        "missing-cert.yaml",
        "karuta:\n  http:\n    https_addr: \"127.0.0.1:8443\"\n    tls_cert_path: /nonexistent/cert.pem\n    tls_key_path: /nonexistent/key.pem\n",
    );
    assert_one_line_error(&missing_cert, "karuta.http.tls_cert_path", "cannot read");

    let root = write_config(dir, "root.yaml", "tracker:\n  announce_interval: 30m\n");
    assert_one_line_error(&root, "root key", "missing");

    assert_one_line_error(
        &dir.join("absent.yaml"),
        "cannot read the file",
        "No such file",
    );
}

#[test]
fn unknown_keys_are_warned_about_not_fatal() {
    let tmp = TempDir::new("config-unknown");
    let dir = tmp.path();
    let file = write_config(
        dir,
        "unknown.yaml",
        "chihaya:\n  bogus_key: 1\n  http:\n    adr: \"x\"\n  udp:\n    addr: \"127.0.0.1:6969\"\n",
    );
    let out = check_passes(&file);
    for key in ["chihaya.bogus_key", "chihaya.http.adr"] {
        assert!(out.stderr.contains(&format!("key={key}")), "{}", out.stderr);
    }
}

#[test]
fn check_config_accepts_chihayas_example() {
    let out = check_passes(&fixture("example_config.yaml"));
    assert!(
        out.stdout.contains("configuration OK (storage \"memory\""),
        "{}",
        out.stdout
    );
}

#[test]
fn chihaya_redis_example_passes_check_config_and_bad_redis_keys_are_named() {
    // check-config never connects: the fixture passes with no Redis running.
    let ok = check_passes(&fixture("example_config_redis.yaml"));
    assert!(ok.stdout.contains("storage \"redis\""), "{}", ok.stdout);

    let tmp = TempDir::new("config-redis");
    let dir = tmp.path();
    let redis = |name: &str, config: &str| {
        write_config(
            dir,
            name,
            &format!("chihaya:\n  storage:\n    name: redis\n    config:\n{config}"),
        )
    };
    let bad_url = redis(
        "bad-url.yaml",
        "      redis_broker: \"http://127.0.0.1:6379\"\n",
    );
    assert_one_line_error(
        &bad_url,
        "chihaya.storage.config.redis_broker",
        "invalid Redis URL",
    );
    let zero = redis("zero.yaml", "      redis_read_timeout: 0s\n");
    assert_one_line_error(
        &zero,
        "chihaya.storage.config.redis_read_timeout",
        "greater than zero",
    );
    let ca = redis(
        "ca.yaml",
        "      redis_broker: \"rediss://127.0.0.1:6380/0\"\n      redis_tls_ca_file: /nonexistent/ca.pem\n",
    );
    assert_one_line_error(
        &ca,
        "chihaya.storage.config.redis_tls_ca_file",
        "/nonexistent/ca.pem",
    );
}

#[test]
fn shipped_private_tracker_example_loads_with_its_three_hooks() {
    let registry = karuta::default_registry();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/private-tracker.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("${KARUTA_DB}", "postgresql://karuta@127.0.0.1:5432/site");
    let dir = test_support::TempDir::new("private-example");
    let text = text.replace(
        "/var/lib/karuta/privtrak.journal",
        &dir.path().join("journal").display().to_string(),
    );
    let copy = dir.path().join("private-tracker.yaml");
    std::fs::write(&copy, text).unwrap();
    let loaded = config::load(&ConfigSource::File(copy), &registry).unwrap();
    let names: Vec<String> = loaded
        .tracker
        .prehooks
        .unwrap()
        .iter()
        .map(|h| h.name.clone())
        .collect();
    assert_eq!(names, ["passkey approval", "torrent approval", "privtrak"]);
}
