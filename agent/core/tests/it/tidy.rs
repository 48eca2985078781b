//! The core does no I/O: no I/O crates in its dependencies, no clock, RNG or UUID reads in its
//! sources.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn tidy_the_core_reads_no_clock_rng_or_uuid() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() >= 8, "read only {} files", files.len());
    let banned = [
        "Instant::now",
        "SystemTime::now",
        "thread_rng",
        "new_v4",
        "tokio::",
        "quinn::",
        "rustls::",
        "nix::",
        "std::fs",
        "std::net",
    ];
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        // Unit tests may make a clock's origin; the core itself may not read one.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        // The harness may make the virtual clock's origin.
        let allowed: &[&str] = if f.ends_with("testing.rs") {
            &["Instant::now"]
        } else {
            &[]
        };
        for b in banned.iter().filter(|b| !allowed.contains(b)) {
            if text.contains(b) {
                found.push(format!("{} uses {b}", f.display()));
            }
        }
    }
    assert!(found.is_empty(), "{found:?}");
}
