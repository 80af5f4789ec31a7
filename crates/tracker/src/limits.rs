//! Request limits every frontend applies the same way: how many peers a client
//! may ask for and how many torrents one scrape may name.

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
