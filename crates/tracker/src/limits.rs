//! Request limits every frontend applies the same way: how many peers a client
//! may ask for and how many torrents one scrape may name.

use crate::ConfigError;

/// The most peers one reply may carry: the store copies them under a lock,
/// and a UDP reply of that many IPv6 peers would already be 180 kB.
pub const MAX_NUMWANT_LIMIT: u32 = 10_000;

/// chihaya's `max_numwant`, `default_numwant` and `max_scrape_infohashes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_numwant: u32,
    pub default_numwant: u32,
    pub max_scrape_infohashes: u32,
}

impl Default for RequestLimits {
    /// chihaya's code defaults.
    fn default() -> Self {
        RequestLimits {
            max_numwant: 100,
            default_numwant: 50,
            max_scrape_infohashes: 50,
        }
    }
}

impl RequestLimits {
    /// The number of peers to return: the default when the client gave none or
    /// a negative number (UDP's -1), capped at the maximum.
    pub fn num_want(&self, requested: Option<i64>) -> u32 {
        match requested {
            Some(n) if n >= 0 => n.min(i64::from(self.max_numwant)) as u32,
            _ => self.default_numwant.min(self.max_numwant),
        }
    }

    /// Checks the limits make sense; keys are relative to the frontend's section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_numwant > MAX_NUMWANT_LIMIT {
            return Err(ConfigError::new(
                "max_numwant",
                format!(
                    "{} is more than the limit of {MAX_NUMWANT_LIMIT}",
                    self.max_numwant
                ),
            ));
        }
        if self.max_numwant == 0 {
            return Err(ConfigError::new("max_numwant", "must be greater than zero"));
        }
        if self.default_numwant > self.max_numwant {
            return Err(ConfigError::new(
                "default_numwant",
                format!(
                    "{} is more than max_numwant ({})",
                    self.default_numwant, self.max_numwant
                ),
            ));
        }
        if self.max_scrape_infohashes == 0 {
            return Err(ConfigError::new(
                "max_scrape_infohashes",
                "must be greater than zero",
            ));
        }
        Ok(())
    }

    /// How many of `requested` info hashes a scrape answers (the rest are dropped).
    pub fn scrape_len(&self, requested: usize) -> usize {
        requested.min(self.max_scrape_infohashes as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_want() {
        let l = RequestLimits::default();
        assert_eq!(l.num_want(None), 50);
        assert_eq!(l.num_want(Some(-1)), 50);
        assert_eq!(l.num_want(Some(0)), 0);
        assert_eq!(l.num_want(Some(30)), 30);
        assert_eq!(l.num_want(Some(5000)), 100);
        let odd = RequestLimits {
            max_numwant: 10,
            default_numwant: 50,
            max_scrape_infohashes: 2,
        };
        assert_eq!(odd.num_want(None), 10);
        assert_eq!(odd.scrape_len(5), 2);
        assert_eq!(odd.scrape_len(1), 1);
    }
}
