//! The throwaway PostgreSQL: a row written before a fast stop, and one
//! written before an immediate stop, are both read back after the restarts,
//! on the same port and data dir.

use test_support::postgres::Postgres;

#[test]
fn rows_survive_fast_and_immediate_restarts_on_the_same_port() {
    let mut pg = Postgres::start("pg-restarts");
    let port = pg.port();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );
    pg.psql("CREATE TABLE swarm (info_hash text PRIMARY KEY, seeders int NOT NULL)");
    pg.psql("INSERT INTO swarm VALUES ('aa', 3)");
    assert_eq!(pg.psql("SELECT info_hash, seeders FROM swarm"), "aa|3");

    pg.stop_fast();
    assert!(!pg.is_running());
    let refused = pg.try_psql("SELECT 1").unwrap_err();
    assert!(refused.contains("127.0.0.1"), "{refused}");
    pg.restart();
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("SELECT info_hash, seeders FROM swarm"), "aa|3");

    // An immediate stop is a crash: the next start recovers from the WAL.
    pg.psql("INSERT INTO swarm VALUES ('bb', 5)");
    pg.stop_immediate();
    pg.restart();
    assert_eq!(
        pg.psql("SELECT info_hash, seeders FROM swarm ORDER BY info_hash"),
        "aa|3\nbb|5"
    );
}
