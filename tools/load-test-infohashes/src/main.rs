//! `load-test-infohashes N`: the first N info hashes aquatic_udp_load_test
//! 0.9 uses (its `number_of_torrents`), one hex string per line.
//!
//! The generator draws them from rand 0.8's `SmallRng` seeded with a fixed
//! value, one `u8` at a time; drawing the same way reproduces them.

#![forbid(unsafe_code)]

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::Write;

/// The seed aquatic_udp_load_test 0.9 uses for its info hashes.
const SEED: u64 = 0xc3aa_8be6_17b3_acce;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: load-test-infohashes NUMBER_OF_TORRENTS");
    let mut rng = SmallRng::seed_from_u64(SEED);
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for _ in 0..n {
        let mut hash = [0u8; 20];
        for byte in hash.iter_mut() {
            *byte = rng.r#gen();
        }
        for b in hash {
            write!(out, "{b:02x}").expect("stdout");
        }
        writeln!(out).expect("stdout");
    }
}
