//! Mesos clients from PyPI for the gateway's tests: a Python venv with pymesos 0.3.15 and
//! avmesos-cli 1.3.0 (`python -m avmesos.cli.mesos-cli`), built once per machine and cached (`shared/notes/mesos-clients.md` says why http-parser is
//! installed as a wheel of its Python files only: its C extension does not build on 3.11).
//!
//! The venv is built under a lock, in place, and marked complete with a stamp file naming the
//! recipe; a venv without the stamp (a build that died) is removed and built again. Scripts run
//! with the venv's `bin/python` (`python -m pip`, never the venv's script shebangs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the venv holds; a change makes a new venv (the stamp must match).
pub const RECIPE: &str =
    "python3 venv: http-parser 0.9.0 (pure-Python wheel), pymesos 0.3.15, avmesos-cli 1.3.0";
const STAMP: &str = "corral-recipe";

/// The system Python the notes were checked with (Debian's), else `python3` from PATH.
fn python3() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/python3");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("python3")
    }
}

fn cache_root() -> PathBuf {
    if crate::is_root() {
        PathBuf::from("/var/cache/corral-it")
    } else {
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/corral-it"))
            .unwrap_or_else(|| PathBuf::from("/var/tmp/corral-it-cache"))
    }
}

fn run(what: &str, cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The venv's python (with pymesos and avmesos-cli), building the venv first if this machine has none yet. `Err` says why it
/// could not be built (no python3 or venv module, PyPI unreachable...).
pub fn pymesos_python() -> Result<PathBuf, String> {
    let root = cache_root();
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let lock_path = root.join("mesos-venv.lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock {}: {e}", lock_path.display()))?;
    let venv = root.join("mesos-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join(STAMP);
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == RECIPE) && python.exists() {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    build(&venv).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&venv);
    })?;
    std::fs::write(&stamp, RECIPE).map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok(python)
}

fn build(venv: &Path) -> Result<(), String> {
    let py = python3();
    let work = tempfile::Builder::new()
        .prefix("mesos-venv-build-")
        .tempdir_in(venv.parent().unwrap_or(Path::new("/var/tmp")))
        .map_err(|e| format!("cannot make a build directory: {e}"))?;
    let b = work.path().join("build-venv");
    run(
        "python3 -m venv",
        Command::new(&py).args(["-m", "venv"]).arg(venv),
    )?;
    run(
        "python3 -m venv (build)",
        Command::new(&py).args(["-m", "venv"]).arg(&b),
    )?;
    let bpy = b.join("bin/python");
    let pip = |python: &Path| {
        let mut c = Command::new(python);
        c.args([
            "-m",
            "pip",
            "--disable-pip-version-check",
            "--no-input",
            "-q",
        ]);
        c
    };
    run(
        "pip install setuptools==65.5.0 wheel",
        pip(&bpy).args(["install", "setuptools==65.5.0", "wheel"]),
    )?;
    let sd = work.path().join("sd");
    run(
        "pip download http-parser==0.9.0",
        pip(&bpy)
            .args([
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--no-build-isolation",
                "http-parser==0.9.0",
                "-d",
            ])
            .arg(&sd),
    )?;
    run(
        "tar xzf http-parser-0.9.0.tar.gz",
        Command::new("tar")
            .arg("xzf")
            .arg(sd.join("http-parser-0.9.0.tar.gz"))
            .arg("-C")
            .arg(work.path()),
    )?;
    let whl = work.path().join("whl");
    run(
        "build the http-parser wheel (Python files only)",
        Command::new(&bpy)
            .args([
                "setup.py",
                "-q",
                "build_py",
                "bdist_wheel",
                "--skip-build",
                "-d",
            ])
            .arg(&whl)
            .current_dir(work.path().join("http-parser-0.9.0")),
    )?;
    let wheel = std::fs::read_dir(&whl)
        .map_err(|e| format!("cannot list {}: {e}", whl.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("no wheel was built in {}", whl.display()))?;
    let vpy = venv.join("bin/python");
    run(
        "pip install the http-parser wheel",
        pip(&vpy).args(["install", "--no-deps"]).arg(&wheel),
    )?;
    run(
        "pip install pymesos==0.3.15",
        pip(&vpy).args(["install", "pymesos==0.3.15"]),
    )?;
    // avmesos-cli 1.3.0 declares Python >= 3.12 but runs on 3.11 (the notes): install it
    // without that check, then the dependencies it declares.
    run(
        "pip install avmesos-cli==1.3.0",
        pip(&vpy).args([
            "install",
            "--no-deps",
            "--ignore-requires-python",
            "avmesos-cli==1.3.0",
        ]),
    )?;
    let req = work.path().join("avmesos-cli-requirements.txt");
    let out = Command::new(&vpy)
        .args([
            "-c",
            "import importlib.metadata as m; print('\\n'.join(m.requires('avmesos-cli')))",
        ])
        .output()
        .map_err(|e| format!("cannot list avmesos-cli's requirements: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "listing avmesos-cli's requirements failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(&req, &out.stdout)
        .map_err(|e| format!("cannot write {}: {e}", req.display()))?;
    run(
        "pip install avmesos-cli's requirements",
        pip(&vpy).arg("install").arg("-r").arg(&req),
    )?;
    run(
        "import pymesos and avmesos.cli",
        Command::new(&vpy).args(["-c", "import pymesos, http_parser, avmesos.cli"]),
    )
}
