use super::*;

fn spec() -> ContainerSpec {
    ContainerSpec::new(vec!["/bin/true".into()], "/srv/sandbox")
}

#[test]
fn ids_are_safe_directory_names() {
    for ok in ["a", "task-1.2_x", &"x".repeat(128)] {
        assert!(validate_id(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "../x",
        "a b",
        "é",
        &"x".repeat(129),
    ] {
        assert!(
            matches!(validate_id(bad), Err(IsolationError::InvalidId(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn limits_from_spec() {
    let mut s = spec();
    s.cpus = Some(0.5);
    s.cpu_hard_limit = true;
    s.memory_bytes = Some((64 << 20) + 1);
    let l = validate_spec(&s, 4096).unwrap();
    assert_eq!(
        l.memory_bytes,
        Some((64 << 20) + 4096),
        "rounded up to a page"
    );
    assert_eq!(l.pids_max, 4096, "default pids limit");
    assert_eq!(l.cpu_quota_us(), Some(50_000));
    s.pids_limit = Some(64);
    assert_eq!(validate_spec(&s, 4096).unwrap().pids_max, 64);
}

#[test]
fn bad_limits_are_rejected() {
    type Edit = Box<dyn Fn(&mut ContainerSpec)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("cpus 0", Box::new(|s| s.cpus = Some(0.0))),
        ("cpus negative", Box::new(|s| s.cpus = Some(-0.5))),
        ("cpus inf", Box::new(|s| s.cpus = Some(f64::INFINITY))),
        (
            "hard limit without cpus",
            Box::new(|s| s.cpu_hard_limit = true),
        ),
        ("memory 0", Box::new(|s| s.memory_bytes = Some(0))),
        ("memory tiny", Box::new(|s| s.memory_bytes = Some(4096))),
        ("pids 0", Box::new(|s| s.pids_limit = Some(0))),
        ("pids 1", Box::new(|s| s.pids_limit = Some(1))),
        ("empty argv", Box::new(|s| s.argv.clear())),
        ("nul in argv", Box::new(|s| s.argv.push("a\0b".into()))),
        (
            "bad env key",
            Box::new(|s| s.env.push(("A=B".into(), "x".into()))),
        ),
        (
            "hostname without uts",
            Box::new(|s| {
                s.hostname = Some("h".into());
                s.namespaces.uts = false;
            }),
        ),
        (
            "long hostname",
            Box::new(|s| s.hostname = Some("h".repeat(65))),
        ),
    ];
    for (name, f) in cases {
        let mut s = spec();
        f(&mut s);
        assert!(validate_spec(&s, 4096).is_err(), "{name} accepted");
    }
}

#[test]
fn cpu_max_parsing() {
    assert_eq!(crate::parse_cpu_max_milli("50000 100000\n"), Some(500));
    assert_eq!(crate::parse_cpu_max_milli("max 100000"), None);
    assert_eq!(crate::parse_cpu_max_milli("150000 100000"), Some(1500));
}

#[test]
fn handles_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Isolator>();
    assert_send_sync::<crate::Container>();
}
