//! libpq's `sslmode`s over rustls against a real PostgreSQL speaking TLS with
//! a self-signed certificate for `localhost`: what each mode accepts and
//! refuses, and that TLS is really used.

use std::time::Duration;

use database::{Database, PgOptions};
use test_support::postgres::Postgres;
use tracker::config::ConfigDuration;

fn options(url: String) -> PgOptions {
    PgOptions {
        url,
        connect_timeout: ConfigDuration(Duration::from_secs(3)),
        ..PgOptions::default()
    }
}

/// Whether a connection succeeds, and if so whether it is encrypted.
async fn connect(url: String) -> Result<bool, String> {
    let db = Database::new(&options(url)).map_err(|e| e.to_string())?;
    let client = db.client().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_does_what_libpq_does() {
    let pg = Postgres::start_tls("db-tls", &["localhost"]);
    let ca = pg.ca_file().display().to_string();
    let url = |host: &str, query: &str| {
        format!(
            "postgresql://{}@{host}:{}/{}?{query}",
            pg.user(),
            pg.port(),
            pg.dbname()
        )
    };
    // Not encrypted when asked not to be.
    assert_eq!(
        connect(url("127.0.0.1", "sslmode=disable")).await,
        Ok(false)
    );
    // prefer (the default) and require encrypt without checking the certificate.
    assert_eq!(connect(url("127.0.0.1", "")).await, Ok(true));
    assert_eq!(connect(url("127.0.0.1", "sslmode=require")).await, Ok(true));
    // require with a root file checks the chain, as verify-ca.
    assert_eq!(
        connect(url(
            "127.0.0.1",
            &format!("sslmode=require&sslrootcert={ca}")
        ))
        .await,
        Ok(true)
    );
    // verify-ca: the chain, not the name (the certificate is for localhost).
    assert_eq!(
        connect(url(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca}")
        ))
        .await,
        Ok(true)
    );
    // verify-full: the chain and the name.
    assert_eq!(
        connect(url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}")
        ))
        .await,
        Ok(true)
    );
    let wrong_name = connect(url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(wrong_name.is_err(), "{wrong_name:?}");
    // Without the root file the Mozilla roots do not trust it.
    let untrusted = connect(url("localhost", "sslmode=verify-full")).await;
    assert!(untrusted.is_err(), "{untrusted:?}");
    let untrusted = connect(url("127.0.0.1", "sslmode=verify-ca")).await;
    assert!(untrusted.is_err(), "{untrusted:?}");
    // The key=value form reads the same settings.
    let kv = format!(
        "host=localhost port={} user={} dbname={} sslmode=verify-full sslrootcert={ca}",
        pg.port(),
        pg.user(),
        pg.dbname()
    );
    assert_eq!(connect(kv).await, Ok(true));
}
