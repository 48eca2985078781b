//! Rules of the codebase, as tests: every workspace member is on ARCHITECTURE.md's code map, and
//! `unsafe` appears only in the isolation crate.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root")
        .to_path_buf()
}

fn members() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let start = manifest.find("members = [").expect("members list");
    let end = start + manifest[start..].find(']').expect("end of members");
    manifest[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_workspace_member_is_on_the_architecture_code_map() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let missing: Vec<String> = members()
        .into_iter()
        .filter(|m| !arch.contains(&format!("### `{m}/`")))
        .collect();
    assert!(missing.len() < members().len(), "no member parsed");
    assert!(
        missing.is_empty(),
        "members missing from ARCHITECTURE.md's code map: {missing:?}"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn unsafe_code_lives_only_in_the_isolation_crate() {
    let mut offenders = Vec::new();
    for m in members().iter().filter(|m| m.as_str() != "isolation") {
        let mut files = Vec::new();
        rust_files(&root().join(m), &mut files);
        for f in files
            .into_iter()
            .filter(|f| !f.ends_with("tests/it/tidy.rs"))
        {
            // Nested crates (master/core inside master/) are checked as their own members.
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            if text.lines().any(|l| {
                let l = l.trim_start();
                !l.starts_with("//")
                    && (l.contains("unsafe {")
                        || l.starts_with("unsafe fn")
                        || l.contains(" unsafe fn"))
            }) {
                offenders.push(f);
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "unsafe outside isolation/: {offenders:?}"
    );
}
