//! The site's torrents: which info hashes are registered and their credit
//! factors.

use bittorrent::InfoHash;
use database::Database;
use database::tokio_postgres::Row;
use serde::Deserialize;
use tracker::site::TorrentFactors;

use super::postgres::Kind;
use super::table::Change;

/// `{schema}.torrents`: rows not `deleted`.
pub struct Torrents;

/// A v1 hash (20 bytes), or a v2 hash (32) truncated to its first 20, as
/// announces carry it.
fn hash_of(bytes: &[u8]) -> Result<InfoHash, String> {
    match bytes.len() {
        20 | 32 => {
            let mut h = [0u8; 20];
            h.copy_from_slice(&bytes[..20]);
            Ok(InfoHash(h))
        }
        n => Err(format!("an info hash of {n} bytes (20 or 32 expected)")),
    }
}

#[derive(Deserialize)]
struct Notified {
    op: String,
    #[serde(default)]
    info_hash: String,
    #[serde(default = "one")]
    upload_factor: f32,
    #[serde(default = "one")]
    download_factor: f32,
    #[serde(default)]
    deleted: bool,
    /// An UPDATE's previous hash (the row may have changed its key).
    #[serde(default)]
    old_info_hash: Option<String>,
}

fn one() -> f32 {
    1.0
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not hexadecimal"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

impl Kind for Torrents {
    type Key = InfoHash;
    type Value = TorrentFactors;
    const TABLE: &'static str = "torrents";

    fn load_sql(&self, db: &Database) -> String {
        db.sql("SELECT info_hash, upload_factor, download_factor FROM {schema}.torrents WHERE NOT deleted")
    }

    fn row(row: &Row) -> Result<Option<(InfoHash, TorrentFactors)>, String> {
        let bytes: &[u8] = row.try_get(0).map_err(|e| e.to_string())?;
        let factors = TorrentFactors {
            upload_factor: super::factor(
                row.try_get(1).map_err(|e| e.to_string())?,
                "column 1 (upload_factor)",
            )?,
            download_factor: super::factor(
                row.try_get(2).map_err(|e| e.to_string())?,
                "column 2 (download_factor)",
            )?,
        };
        Ok(Some((hash_of(bytes)?, factors)))
    }

    fn notice(payload: &str) -> Result<Vec<Change<InfoHash, TorrentFactors>>, String> {
        let n: Notified = serde_json::from_str(payload).map_err(|e| e.to_string())?;
        let parse = |hex: &str| unhex(hex).and_then(|b| hash_of(&b));
        let hash = || parse(&n.info_hash);
        let mut changes = Vec::with_capacity(2);
        if let Some(old) = n.old_info_hash.as_deref().filter(|old| *old != n.info_hash) {
            changes.push(Change::Delete(parse(old)?));
        }
        changes.push(match n.op.as_str() {
            "reload" => Change::Reload,
            "delete" => Change::Delete(hash()?),
            "upsert" if n.deleted => Change::Delete(hash()?),
            "upsert" => Change::Upsert(
                hash()?,
                TorrentFactors {
                    upload_factor: super::factor(n.upload_factor, "upload_factor")?,
                    download_factor: super::factor(n.download_factor, "download_factor")?,
                },
            ),
            other => return Err(format!("unknown op {other:?}")),
        });
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications() {
        let ih = InfoHash([0xab; 20]);
        let hex = "ab".repeat(20);
        let free = TorrentFactors {
            upload_factor: 1.0,
            download_factor: 0.0,
        };
        assert_eq!(
            Torrents::notice(&format!(
                r#"{{"op":"upsert","info_hash":"{hex}","upload_factor":1,"download_factor":0,"deleted":false}}"#
            )),
            Ok(vec![Change::Upsert(ih, free)])
        );
        assert_eq!(
            Torrents::notice(&format!(
                r#"{{"op":"upsert","info_hash":"{hex}","deleted":true}}"#
            )),
            Ok(vec![Change::Delete(ih)])
        );
        // A v2 hash is held truncated.
        let v2 = format!("{hex}{}", "cd".repeat(12));
        assert_eq!(
            Torrents::notice(&format!(r#"{{"op":"delete","info_hash":"{v2}"}}"#)),
            Ok(vec![Change::Delete(ih)])
        );
        // An UPDATE of the key itself: the old hash goes.
        let other = "cd".repeat(20);
        assert_eq!(
            Torrents::notice(&format!(
                r#"{{"op":"upsert","info_hash":"{other}","old_info_hash":"{hex}"}}"#
            )),
            Ok(vec![
                Change::Delete(ih),
                Change::Upsert(
                    InfoHash([0xcd; 20]),
                    TorrentFactors {
                        upload_factor: 1.0,
                        download_factor: 1.0
                    }
                )
            ])
        );
        assert!(Torrents::notice(r#"{"op":"delete","info_hash":"abc"}"#).is_err());
        assert!(Torrents::notice(r#"{"op":"delete","info_hash":"abcd"}"#).is_err());
    }
}
