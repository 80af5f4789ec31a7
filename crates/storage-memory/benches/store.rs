//! chihaya's storage benchmarks (and karuta's one-step announce) for the
//! memory store: `cargo bench -p storage-memory`. See `tracker::benchmarks`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use storage_memory::{MemoryConfig, MemoryStore};
use tracker::PeerStore;
use tracker::benchmarks::{criterion_config, peer_store_benchmarks};

fn memory(c: &mut Criterion) {
    // The defaults karuta runs with (1024 shards, 30-minute peer lifetime), so
    // no garbage collection runs while a benchmark is measured.
    peer_store_benchmarks(c, "memory", &|| {
        Arc::new(MemoryStore::new(MemoryConfig::default()).expect("a valid memory config"))
            as Arc<dyn PeerStore>
    });
}

criterion_group! {
    name = benches;
    config = criterion_config();
    targets = memory
}
criterion_main!(benches);
