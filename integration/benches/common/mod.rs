//! What the integration benches share.

/// Points `CORRAL_BIN` (what `integration::Cluster` runs) at the workspace's release `corral`
/// unless it is set already; exits naming the build command when that binary is missing.
pub fn use_release_corral(bench: &str) {
    if std::env::var_os("CORRAL_BIN").is_some() {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let release = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release/corral");
    if !release.exists() {
        eprintln!("{bench}: build the release binary first: cargo build --release -p corral");
        std::process::exit(1);
    }
    std::env::set_var("CORRAL_BIN", &release);
}
