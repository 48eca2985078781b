//! Test-only helper for the isolation crate's tests and benchmark: `__init SPEC` runs the
//! container init ([`isolation::init_main`]); the other subcommands are tiny task programs that
//! need nothing else installed (so the same scenarios run in a busybox VM).

use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("usage: isolation-test-init __init SPEC | alloc MIB | spin SECS | ...");
        std::process::exit(2);
    };
    let rest = &args[1..];
    let arg = |i: usize| rest.get(i).cloned().unwrap_or_default();
    let code = match cmd.as_str() {
        "__init" => isolation::init_main(rest),
        "true" => 0,
        "exit" => arg(0).parse().unwrap_or(1),
        "alloc" => alloc(arg(0).parse().unwrap_or(0)),
        // Waits (up to a minute) until PATH exists, then allocates MIB: lets a test change the
        // container's limits before the allocation.
        "alloc-when" => {
            let start = Instant::now();
            while !std::path::Path::new(&arg(0)).exists() && start.elapsed().as_secs() < 60 {
                std::thread::sleep(Duration::from_millis(20));
            }
            alloc(arg(1).parse().unwrap_or(0))
        }
        // Allocates MIB, says so, and holds it for SECS.
        "hold" => {
            let mut chunks = Vec::new();
            for i in 0..arg(0).parse::<usize>().unwrap_or(0) {
                chunks.push(vec![i as u8 | 1; 1 << 20]);
            }
            println!("holding {} MiB", chunks.len());
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_secs_f64(arg(1).parse().unwrap_or(1.0)));
            std::hint::black_box(&chunks);
            0
        }
        // A multi-process task: a child allocates MIB (`alloc`), the parent waits for it, says
        // how it ended, lingers a second (a server's master going on) and exits 0.
        "hog-child" => {
            let status = std::process::Command::new("/proc/self/exe")
                .args(["alloc", &arg(0)])
                .status();
            match status {
                Ok(s) => println!("child ended: {s}"),
                Err(e) => println!("child not started: {e}"),
            }
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_secs(1));
            println!("survived");
            0
        }
        "spin" => spin(arg(0).parse().unwrap_or(1.0)),
        "sleep" => {
            std::thread::sleep(Duration::from_secs_f64(arg(0).parse().unwrap_or(1.0)));
            0
        }
        "forkbomb" => forkbomb(arg(0).parse().unwrap_or(5.0)),
        "daemon" => daemon(&arg(0)),
        "ps" => ps(),
        "read" => match std::fs::read_to_string(arg(0)) {
            Ok(t) => {
                print!("{t}");
                0
            }
            Err(e) => {
                println!("read {}: {e}", arg(0));
                1
            }
        },
        "signal" => signal(arg(0).parse().unwrap_or(1)),
        "write" => try_write(&arg(0), &arg(1)),
        // Writes MIB MiB to PATH (1 MiB at a time), says how far it got, then sleeps
        // SECS.
        "fill" => fill(
            &arg(0),
            arg(1).parse().unwrap_or(0),
            arg(2).parse().unwrap_or(0.0),
        ),
        "create" => try_create(&arg(0)),
        // Lists a directory's entries, sorted, one per line.
        "ls" => match std::fs::read_dir(arg(0)) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for n in names {
                    println!("{n}");
                }
                0
            }
            Err(e) => {
                println!("ls {}: {e}", arg(0));
                1
            }
        },
        "id" => {
            // SAFETY: getuid/getgid cannot fail.
            let (u, g) = unsafe { (libc::getuid(), libc::getgid()) };
            println!("uid={u} gid={g}");
            0
        }
        "hostname" => {
            println!(
                "{}",
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default()
            );
            0
        }
        "env" => {
            for (k, v) in std::env::vars() {
                println!("{k}={v}");
            }
            0
        }
        "status" => {
            // print the Cap* and NoNewPrivs lines of /proc/self/status
            let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            for l in s
                .lines()
                .filter(|l| l.starts_with("Cap") || l.starts_with("NoNewPrivs"))
            {
                println!("{l}");
            }
            0
        }
        other => {
            eprintln!("unknown subcommand {other}");
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn fill(path: &str, mib: usize, hold: f64) -> i32 {
    let mut f = match std::fs::File::create(path) {
        Ok(f) => f,
        Err(e) => {
            println!("create {path}: {e}");
            return 1;
        }
    };
    let chunk = vec![0x5au8; 1 << 20];
    for i in 0..mib {
        if let Err(e) = f.write_all(&chunk) {
            println!("fill stopped at {i} MiB: {e}");
            return 1;
        }
        if i % 8 == 0 {
            let _ = std::io::stdout().flush();
        }
    }
    println!("filled {mib} MiB");
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs_f64(hold));
    0
}

/// Allocates and touches `mib` MiB, then sleeps a little so an OOM kill can land.
fn alloc(mib: usize) -> i32 {
    let mut chunks = Vec::new();
    for i in 0..mib {
        let mut v = vec![0u8; 1 << 20];
        for p in (0..v.len()).step_by(4096) {
            v[p] = (i + p) as u8;
        }
        chunks.push(v);
    }
    println!("allocated {mib} MiB");
    std::thread::sleep(Duration::from_millis(200));
    std::hint::black_box(&chunks);
    0
}

fn spin(secs: f64) -> i32 {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    0
}

/// Forks as fast as it can for `secs`, each child forking too; prints how many forks failed.
fn forkbomb(secs: f64) -> i32 {
    let start = Instant::now();
    let mut failed = 0u64;
    let mut ok = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        // SAFETY: plain fork; the child only sleeps and exits (no locks held in this program).
        match unsafe { libc::fork() } {
            0 => {
                std::thread::sleep(Duration::from_secs_f64(secs));
                // SAFETY: exiting the child without unwinding.
                unsafe { libc::_exit(0) }
            }
            n if n < 0 => {
                failed += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            _ => ok += 1,
        }
    }
    println!("forks ok={ok} failed={failed}");
    0
}

/// Double-forks a daemon (new session, parent gone) that writes its pid to `pidfile` and sleeps.
fn daemon(pidfile: &str) -> i32 {
    // SAFETY: single-threaded program; plain fork.
    match unsafe { libc::fork() } {
        0 => {
            let _ = nix::unistd::setsid();
            // SAFETY: as above.
            match unsafe { libc::fork() } {
                0 => {
                    // A stubborn daemon: only SIGKILL (or cgroup.kill) ends it.
                    // SAFETY: setting SIGTERM to SIG_IGN.
                    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
                    // SAFETY: getpid cannot fail.
                    let me = unsafe { libc::getpid() };
                    let _ = std::fs::write(pidfile, me.to_string());
                    std::thread::sleep(Duration::from_secs(600));
                    // SAFETY: exit without unwinding.
                    unsafe { libc::_exit(0) }
                }
                // SAFETY: exit without unwinding.
                _ => unsafe { libc::_exit(0) },
            }
        }
        _ => {
            // wait for the pid file, then keep running as the "main" task
            for _ in 0..200 {
                if std::fs::metadata(pidfile).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_secs(600));
            0
        }
    }
}

fn ps() -> i32 {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    println!(
        "{}",
        pids.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    0
}

/// Tries to SIGTERM `pid`; prints the result.
fn signal(pid: i32) -> i32 {
    // SAFETY: kill(2) with integer arguments.
    let r = unsafe { libc::kill(pid, libc::SIGTERM) };
    if r == 0 {
        println!("signal ok");
        0
    } else {
        println!("signal {}", std::io::Error::last_os_error());
        1
    }
}

fn try_write(path: &str, value: &str) -> i32 {
    match std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
    {
        Ok(()) => {
            println!("write ok");
            0
        }
        Err(e) => {
            println!("write {path}: {e}");
            1
        }
    }
}

fn try_create(path: &str) -> i32 {
    match std::fs::write(path, "x") {
        Ok(()) => {
            println!("create ok");
            0
        }
        Err(e) => {
            println!("create {path}: {e}");
            1
        }
    }
}
