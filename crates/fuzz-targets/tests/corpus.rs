//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through every
//! target on stable Rust: an input that once found a bug stays a test.

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (name, target) in fuzz_targets::TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "no corpus for {name}");
        for input in &inputs {
            let data = std::fs::read(input).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", input.display());
        }
        eprintln!("{name}: {} inputs", inputs.len());
    }
}

/// `fuzz/Cargo.toml` builds a libFuzzer binary for every target, and no
/// binary for a target that is gone.
#[test]
fn every_target_has_a_fuzz_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "karuta-fuzz")
        .collect();
    let mut names: Vec<&str> = fuzz_targets::TARGETS.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    let mut sorted = bins.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, names);
    for name in bins {
        let body = std::fs::read_to_string(root.join(format!("fuzz_targets/{name}.rs"))).unwrap();
        assert!(body.contains("fuzz_targets::"), "{name}.rs calls no target");
    }
}
