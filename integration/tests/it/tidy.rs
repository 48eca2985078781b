//! Rules of the codebase, as tests: every workspace member is on ARCHITECTURE.md's code map, and
//! `unsafe` appears only in the isolation crate, files and functions of master-core and the agent
//! are short.

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

/// `text` with comments, string and char literals blanked (newlines kept), so that braces and
/// `fn` are only code.
fn code_only(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let start = i;
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if (i == 0 || !is_ident(b[i - 1]))
                && matches!(b.get(i + 1), Some(b'"' | b'#')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                i += 2 + hashes;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            // A char literal ('x', '\n', '\u{7b}'); anything else is a lifetime.
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') => i += 3,
            _ => {
                i += 1;
                continue;
            }
        }
        let end = i.min(b.len());
        blank(&mut out, start, end);
        i = end;
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every function with a body: (name, lines from its `fn` line to its closing brace).
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let code = code_only(text);
    let line_of = |pos: usize| code[..pos].iter().filter(|c| **c == b'\n').count();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 <= code.len() {
        let is_fn = code[i..].starts_with(b"fn ")
            && (i == 0 || !is_ident(code[i - 1]))
            && code.get(i + 3).is_some_and(|c| is_ident(*c));
        if !is_fn {
            i += 1;
            continue;
        }
        let name: String = code[i + 3..]
            .iter()
            .take_while(|c| is_ident(**c))
            .map(|c| char::from(*c))
            .collect();
        let Some(open) = code[i..].iter().position(|c| *c == b'{' || *c == b';') else {
            break;
        };
        let open = i + open;
        if code[open] == b';' {
            i = open;
            continue;
        }
        let mut depth = 0usize;
        let mut close = open;
        for (j, c) in code.iter().enumerate().skip(open) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push((name, line_of(close) - line_of(i) + 1));
        i += 3;
    }
    out
}

#[test]
fn function_lengths_count_by_braces_outside_comments_and_literals() {
    let text = r###"
fn one() {}
trait T { fn decl(&self); }
fn five<'a>(x: &'a str) -> char {
    // a } in a comment, /* { */ and a "}" string
    let _ = r#"}"#; let _ = '}'; let _ = '\u{7d}';
    'x'
}
fn three() {
    fn inner() { if true { } }
}
"###;
    let found = function_lengths(text);
    let want = [("one", 1), ("five", 5), ("three", 3), ("inner", 1)];
    let want: Vec<(String, usize)> = want.iter().map(|(n, l)| (n.to_string(), *l)).collect();
    assert_eq!(found, want);
}

/// Files and functions stay small enough to read at once (issue 12): no source file of
/// master-core or the agent over 1,000 lines, no function in them over 120.
#[test]
fn tidy_files_and_functions_are_short() {
    let mut files = Vec::new();
    for dir in ["master/core/src", "agent"] {
        let before = files.len();
        rust_files(&root().join(dir), &mut files);
        assert!(
            files.len() > before + 10,
            "read only {} files in {dir}",
            files.len() - before
        );
    }
    let mut long = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read source file");
        let lines = text.lines().count();
        if lines > 1_000 {
            long.push(format!(
                "{} has {lines} lines (at most 1,000)",
                path.display()
            ));
        }
        for (name, n) in function_lengths(&text) {
            if n > 120 {
                long.push(format!(
                    "{}: fn {name} has {n} lines (at most 120)",
                    path.display()
                ));
            }
        }
    }
    assert!(long.is_empty(), "too long:\n{}", long.join("\n"));
}

/// quinn and rustls types stay inside `transport/` (issue 12): other crates hold its wrapped
/// `Endpoint`/`Connection` and framed streams, no other manifest depends on either crate, and
/// none enables transport's `quinn-internals` feature or calls its raw accessors.
#[test]
fn quinn_and_rustls_stay_inside_the_transport_crate() {
    // Spelled apart so that this file does not match itself.
    let paths = [
        format!("{}::", "quinn"),
        format!("{}::", "rustls"),
        format!(".{}()", "quinn"),
        format!("{}::raw::", "transport"),
    ];
    let mut offenders = Vec::new();
    let mut read = 0;
    for m in members().iter().filter(|m| m.as_str() != "transport") {
        let mut files = Vec::new();
        rust_files(&root().join(m), &mut files);
        for f in files {
            read += 1;
            let text = std::fs::read_to_string(&f).expect("read source file");
            for (i, line) in text.lines().enumerate() {
                if paths.iter().any(|p| line.contains(p.as_str())) {
                    offenders.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
        let manifest =
            std::fs::read_to_string(root().join(m).join("Cargo.toml")).expect("member Cargo.toml");
        for dep in ["quinn", "rustls"] {
            if manifest
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{dep}.workspace")))
            {
                offenders.push(format!("{m}/Cargo.toml depends on {dep}"));
            }
        }
        if manifest.contains("quinn-internals") {
            offenders.push(format!("{m}/Cargo.toml enables quinn-internals"));
        }
    }
    assert!(read > 50, "read only {read} source files");
    assert!(
        offenders.is_empty(),
        "quinn/rustls outside transport/:\n{}",
        offenders.join("\n")
    );
}

/// The agent core is sans-IO (issue 12): its manifest names no I/O crate and its sources read
/// no clock, RNG or UUID (the harness, `testing.rs`, may make its virtual clock's origin).
#[test]
fn tidy_the_agent_core_does_no_io() {
    let dir = root().join("agent/core");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("agent/core/Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .expect("a [dependencies] table");
    assert!(deps.contains("proto"), "read no dependency: {deps}");
    for banned in [
        "tokio",
        "quinn",
        "rustls",
        "nix",
        "procfs",
        "isolation",
        "uuid",
        "rand",
    ] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(banned)),
            "agent-core must not depend on {banned}"
        );
    }
    let mut files = Vec::new();
    rust_files(&dir.join("src"), &mut files);
    assert!(files.len() >= 8, "read only {} files", files.len());
    let mut found = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read source file");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let clock_ok = path.ends_with("testing.rs");
        // quinn and rustls spelled apart so that the check above does not match this file.
        for b in [
            "tokio::",
            concat!("quinn", "::"),
            concat!("rustls", "::"),
            "nix::",
            "std::fs",
            "std::net",
            "Instant::now",
            "SystemTime::now",
            "thread_rng",
            "new_v4",
        ] {
            if code.contains(b) && !(clock_ok && b == "Instant::now") {
                found.push(format!("{} uses {b}", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "I/O in agent-core: {found:?}");
}
