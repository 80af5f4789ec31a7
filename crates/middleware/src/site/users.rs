//! The site's users: passkey → user id, whether they may leech, and their
//! credit factors.

use database::Database;
use database::tokio_postgres::Row;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::postgres::Kind;
use super::table::Change;

/// A user as `passkey approval` holds them (24 bytes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct User {
    pub user_id: i64,
    pub upload_factor: f32,
    pub download_factor: f32,
    pub can_leech: bool,
}

/// The 16 bytes a passkey is held under: a passkey of 32 lower-case hex
/// digits is its bytes; any other is the first 16 bytes of its SHA-256 (a
/// collision is out of reach), so every key has the same small size. Case
/// matters, as in the database's unique constraint: `ABC…` and `abc…` are
/// two passkeys.
pub fn passkey_key(passkey: &str) -> [u8; 16] {
    if !passkey.bytes().any(|b| b.is_ascii_uppercase())
        && let Some(bytes) = tracker::site::parse_hex16(passkey)
    {
        return bytes;
    }
    let digest = Sha256::digest(passkey.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// `{schema}.users`, or the site's own query.
pub struct Users {
    /// The site's query (columns user_id, passkey, can_leech,
    /// upload_factor, download_factor), or empty for karuta's table.
    pub query: String,
}

fn int(row: &Row, i: usize) -> Result<i64, String> {
    row.try_get::<_, i64>(i)
        .or_else(|_| row.try_get::<_, i32>(i).map(i64::from))
        .map_err(|e| format!("column {i}: {e}"))
}

fn real(row: &Row, i: usize) -> Result<f32, String> {
    row.try_get::<_, f32>(i)
        .or_else(|_| row.try_get::<_, f64>(i).map(|v| v as f32))
        .map_err(|e| format!("column {i}: {e}"))
}

#[derive(Deserialize)]
struct Notified {
    op: String,
    #[serde(default)]
    user_id: i64,
    #[serde(default)]
    passkey: String,
    #[serde(default = "yes")]
    can_leech: bool,
    #[serde(default = "one")]
    upload_factor: f32,
    #[serde(default = "one")]
    download_factor: f32,
    #[serde(default)]
    old_passkey: Option<String>,
}

fn yes() -> bool {
    true
}

fn one() -> f32 {
    1.0
}

impl Kind for Users {
    type Key = [u8; 16];
    type Value = User;
    const TABLE: &'static str = "users";

    fn load_sql(&self, db: &Database) -> String {
        if self.query.is_empty() {
            db.sql("SELECT user_id, passkey, can_leech, upload_factor, download_factor FROM {schema}.users")
        } else {
            self.query.clone()
        }
    }

    fn row(row: &Row) -> Result<Option<([u8; 16], User)>, String> {
        let passkey: &str = row
            .try_get(1)
            .map_err(|e| format!("column 1 (passkey): {e}"))?;
        let user = User {
            user_id: int(row, 0)?,
            can_leech: row
                .try_get(2)
                .map_err(|e| format!("column 2 (can_leech): {e}"))?,
            upload_factor: super::factor(real(row, 3)?, "column 3 (upload_factor)")?,
            download_factor: super::factor(real(row, 4)?, "column 4 (download_factor)")?,
        };
        Ok(Some((passkey_key(passkey), user)))
    }

    fn notice(payload: &str) -> Result<Vec<Change<[u8; 16], User>>, String> {
        let n: Notified = serde_json::from_str(payload).map_err(|e| e.to_string())?;
        Ok(match n.op.as_str() {
            "reload" => vec![Change::Reload],
            "delete" => vec![Change::Delete(passkey_key(&n.passkey))],
            "upsert" => {
                let mut changes = Vec::with_capacity(2);
                if let Some(old) = n.old_passkey.filter(|old| *old != n.passkey) {
                    changes.push(Change::Delete(passkey_key(&old)));
                }
                changes.push(Change::Upsert(
                    passkey_key(&n.passkey),
                    User {
                        user_id: n.user_id,
                        can_leech: n.can_leech,
                        upload_factor: super::factor(n.upload_factor, "upload_factor")?,
                        download_factor: super::factor(n.download_factor, "download_factor")?,
                    },
                ));
                changes
            }
            other => return Err(format!("unknown op {other:?}")),
        })
    }
}

/// Reads a passkey file: `passkey user_id` per line, blank lines and `#`
/// comments allowed. Such users may leech, at factor 1.
pub fn read_file(path: &std::path::Path) -> Result<Vec<([u8; 16], User)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_file(&text, &path.display().to_string())
}

/// A passkey file's text; errors name `origin` and the line.
pub fn parse_file(text: &str, origin: &str) -> Result<Vec<([u8; 16], User)>, String> {
    let mut users = Vec::new();
    for (n, line) in crate::file_watch::entries(text) {
        let bad = |why: &str| format!("{origin}:{n}: {why}");
        let mut fields = line.split_whitespace();
        let (Some(passkey), Some(id), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("expected `passkey user_id`"));
        };
        let user_id = id
            .parse()
            .map_err(|_| bad(&format!("{id:?} is not a user id")))?;
        users.push((
            passkey_key(passkey),
            User {
                user_id,
                can_leech: true,
                upload_factor: 1.0,
                download_factor: 1.0,
            },
        ));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_passkeys() {
        let hex = "00112233445566778899aabbccddeeff";
        assert_eq!(passkey_key(hex)[..2], [0x00, 0x11]);
        assert_ne!(passkey_key(hex), passkey_key(&hex.to_uppercase()));
        assert_eq!(
            passkey_key(&hex.to_uppercase()),
            passkey_key(&hex.to_uppercase())
        );
        assert_ne!(passkey_key("alice-key"), passkey_key("bob-key"));
        assert_eq!(passkey_key("alice-key"), passkey_key("alice-key"));
    }

    #[test]
    fn notifications() {
        let k = |s: &str| passkey_key(s);
        let u = |id, leech| User {
            user_id: id,
            can_leech: leech,
            upload_factor: 2.0,
            download_factor: 1.0,
        };
        assert_eq!(
            Users::notice(
                r#"{"op":"upsert","user_id":7,"passkey":"a","can_leech":false,"upload_factor":2,"download_factor":1,"old_passkey":null}"#
            ),
            Ok(vec![Change::Upsert(k("a"), u(7, false))])
        );
        assert_eq!(
            Users::notice(
                r#"{"op":"upsert","user_id":7,"passkey":"b","can_leech":true,"upload_factor":2,"download_factor":1,"old_passkey":"a"}"#
            ),
            Ok(vec![
                Change::Delete(k("a")),
                Change::Upsert(k("b"), u(7, true))
            ])
        );
        assert_eq!(
            Users::notice(r#"{"op":"delete","user_id":7,"passkey":"b"}"#),
            Ok(vec![Change::Delete(k("b"))])
        );
        assert_eq!(
            Users::notice(r#"{"op":"reload"}"#),
            Ok(vec![Change::Reload])
        );
        assert!(Users::notice(r#"{"op":"merge"}"#).is_err());
        for bad in ["-1", "1e30"] {
            let payload = format!(
                r#"{{"op":"upsert","user_id":7,"passkey":"a","upload_factor":{bad},"download_factor":1}}"#
            );
            let e = Users::notice(&payload).unwrap_err();
            assert!(
                e.contains("upload_factor: a credit factor must be from 0 to 1000"),
                "{e}"
            );
        }
        assert!(Users::notice("not json").is_err());
    }

    #[test]
    fn passkey_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passkeys");
        std::fs::write(
            &path,
            "# site users\nabc 1\n\n00112233445566778899aabbccddeeff 2 # hex\n",
        )
        .unwrap();
        let users = read_file(&path).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].0, passkey_key("abc"));
        assert_eq!(users[1].1.user_id, 2);
        std::fs::write(&path, "abc\n").unwrap();
        assert!(
            read_file(&path)
                .unwrap_err()
                .ends_with(":1: expected `passkey user_id`")
        );
        std::fs::write(&path, "abc one\n").unwrap();
        assert!(
            read_file(&path)
                .unwrap_err()
                .contains("\"one\" is not a user id")
        );
    }
}
