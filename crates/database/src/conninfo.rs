//! Connection strings as libpq reads them: a URL (`postgresql://user@host/db?sslmode=verify-full`)
//! or `key=value` pairs (`host=db user=karuta sslmode=require`).
//!
//! tokio-postgres parses both forms but knows only three of libpq's six
//! `sslmode`s and no `sslrootcert`. So those two are taken out here, the rest
//! goes to tokio-postgres unchanged, and [`crate::tls`] builds what the mode
//! asks for. Nothing here ever prints the string: it may hold a password.

use std::path::PathBuf;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// Plain first, TLS if the server insists: karuta treats it as
    /// `prefer` (tokio-postgres has no plain-first mode; both accept either).
    Allow,
    /// TLS when the server offers it, without checking its certificate
    /// (libpq's default).
    #[default]
    Prefer,
    /// TLS, the certificate not checked (checked against `sslrootcert` when
    /// one is given, as libpq does).
    Require,
    /// TLS, the certificate must chain to a trusted root.
    VerifyCa,
    /// TLS, a trusted certificate for the host name connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// A connection string with the TLS settings taken out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// What tokio-postgres is given.
    pub rest: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
}

/// Why a connection string cannot be read. The text never quotes the string.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConninfoError {
    #[error(
        "invalid sslmode {0:?} (expected disable, allow, prefer, require, verify-ca or verify-full)"
    )]
    SslMode(String),
    #[error("unterminated quoted value")]
    Quote,
    #[error("malformed percent-escape in the URL")]
    Escape,
}

/// Takes `sslmode` and `sslrootcert` out of a URL or `key=value` string.
pub fn parse(conninfo: &str) -> Result<Parsed, ConninfoError> {
    let s = conninfo.trim();
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        parse_url(s)
    } else {
        parse_pairs(s)
    }
}

fn settings(
    mut sslmode: Option<String>,
    sslrootcert: Option<String>,
) -> Result<(SslMode, Option<PathBuf>), ConninfoError> {
    let mode = match sslmode.take() {
        None => SslMode::default(),
        Some(m) => SslMode::parse(&m).ok_or(ConninfoError::SslMode(m))?,
    };
    Ok((
        mode,
        sslrootcert.filter(|p| !p.is_empty()).map(PathBuf::from),
    ))
}

fn percent_decode(s: &str) -> Result<String, ConninfoError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(ConninfoError::Escape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ConninfoError::Escape)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConninfoError::Escape)
}

fn parse_url(s: &str) -> Result<Parsed, ConninfoError> {
    let (base, query) = match s.split_once('?') {
        Some((base, query)) => (base, query),
        None => (s, ""),
    };
    let (mut sslmode, mut sslrootcert) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => sslmode = Some(percent_decode(v)?),
            "sslrootcert" => sslrootcert = Some(percent_decode(v)?),
            _ => kept.push(pair),
        }
    }
    let (sslmode, sslrootcert) = settings(sslmode, sslrootcert)?;
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(Parsed {
        rest,
        sslmode,
        sslrootcert,
    })
}

/// `key = value` pairs; a value may be single-quoted, with `\'` and `\\`.
fn parse_pairs(s: &str) -> Result<Parsed, ConninfoError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        // A key without `=` is tokio-postgres's to refuse.
        if chars.next_if_eq(&'=').is_none() {
            pairs.push((key, String::new()));
            continue;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(ConninfoError::Quote),
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or(ConninfoError::Quote)?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or(ConninfoError::Quote)?);
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
    let (mut sslmode, mut sslrootcert) = (None, None);
    let mut rest = String::new();
    for (k, v) in pairs {
        match k.as_str() {
            "sslmode" => sslmode = Some(v),
            "sslrootcert" => sslrootcert = Some(v),
            _ => {
                if !rest.is_empty() {
                    rest.push(' ');
                }
                rest.push_str(&k);
                rest.push_str("='");
                rest.push_str(&v.replace('\\', "\\\\").replace('\'', "\\'"));
                rest.push('\'');
            }
        }
    }
    let (sslmode, sslrootcert) = settings(sslmode, sslrootcert)?;
    Ok(Parsed {
        rest,
        sslmode,
        sslrootcert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let p = parse("postgresql://karuta:s3cret@db.example:5433/site?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=karuta").unwrap();
        assert_eq!(p.sslmode, SslMode::VerifyFull);
        assert_eq!(p.sslrootcert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            p.rest,
            "postgresql://karuta:s3cret@db.example:5433/site?application_name=karuta"
        );
        let p = parse("postgres://u@h/db").unwrap();
        assert_eq!(
            (p.sslmode, p.rest.as_str()),
            (SslMode::Prefer, "postgres://u@h/db")
        );
        assert_eq!(
            parse("postgres://u@h/db?sslmode=sometimes"),
            Err(ConninfoError::SslMode("sometimes".into()))
        );
    }

    #[test]
    fn key_value_pairs() {
        assert_eq!(parse("host=db password='open"), Err(ConninfoError::Quote));
        let p = parse(r"host=db.example port = 5433 user=karuta password='it\'s a \\ secret' sslmode=verify-ca sslrootcert=/ca.pem dbname=site").unwrap();
        assert_eq!(p.sslmode, SslMode::VerifyCa);
        assert_eq!(p.sslrootcert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(
            p.rest,
            r"host='db.example' port='5433' user='karuta' password='it\'s a \\ secret' dbname='site'"
        );
        // What came out parses in tokio-postgres with the same values.
        let c: tokio_postgres::Config = p.rest.parse().unwrap();
        assert_eq!(c.get_password(), Some(&b"it's a \\ secret"[..]));
        assert_eq!(c.get_ports(), [5433]);
    }
}
