use std::path::{Path, PathBuf};

use crate::cpio::{normalize, Archive, Content};
use crate::guest::{parse_ldd, parse_output, quote, run_script};
use crate::{elf_kind, ElfKind, VmError, VmRun};

/// One entry read back: name, mode, (rdevmajor, rdevminor), data.
type NewcEntry = (String, u32, (u32, u32), Vec<u8>);

/// Reads back a newc archive, stopping at the trailer.
fn read_newc(mut buf: &[u8]) -> Vec<NewcEntry> {
    let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
    let total = buf.len();
    let mut out = Vec::new();
    loop {
        assert_eq!(
            &buf[..6],
            b"070701",
            "bad magic at offset {}",
            total - buf.len()
        );
        let field = |i: usize| hex(&buf[6 + 8 * i..6 + 8 * (i + 1)]);
        let mode = field(1);
        let filesize = field(6) as usize;
        let rdev = (field(9), field(10));
        let namesize = field(11) as usize;
        let name = std::str::from_utf8(&buf[110..110 + namesize - 1])
            .unwrap()
            .to_owned();
        assert_eq!(buf[110 + namesize - 1], 0, "name not NUL-terminated");
        let data_at = (110 + namesize).next_multiple_of(4);
        let data = buf[data_at..data_at + filesize].to_vec();
        let next = (data_at + filesize).next_multiple_of(4);
        if name == "TRAILER!!!" {
            assert_eq!(next, buf.len(), "data after the trailer");
            return out;
        }
        out.push((name, mode, rdev, data));
        buf = &buf[next..];
        assert_eq!((total - buf.len()) % 4, 0);
    }
}

#[test]
fn newc_archive_lists_parents_first_with_types_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("prog");
    std::fs::write(&host, b"hello, guest").unwrap();

    let mut a = Archive::new();
    a.host_file("/usr/local/bin/prog", &host, 0o755);
    a.bytes("/etc/x", "abc", 0o644);
    a.symlink("/bin/sh", "busybox");
    a.char_dev("/dev/console", 5, 1, 0o600);
    let mut buf = Vec::new();
    a.write_to(&mut buf).unwrap();
    let entries = read_newc(&buf);

    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin",
            "bin/sh",
            "dev",
            "dev/console",
            "etc",
            "etc/x",
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/prog"
        ]
    );
    let get = |n: &str| entries.iter().find(|e| e.0 == n).unwrap();
    assert_eq!(get("usr").1, 0o040755);
    assert_eq!(get("bin/sh").1, 0o120777);
    assert_eq!(get("bin/sh").3, b"busybox");
    assert_eq!(get("dev/console").1, 0o020600);
    assert_eq!(get("dev/console").2, (5, 1));
    assert_eq!(get("etc/x").1, 0o100644);
    assert_eq!(get("etc/x").3, b"abc");
    assert_eq!(get("usr/local/bin/prog").1, 0o100755);
    assert_eq!(get("usr/local/bin/prog").3, b"hello, guest");
}

#[test]
fn newc_write_names_the_missing_host_file() {
    let mut a = Archive::new();
    a.host_file("/x", Path::new("/nonexistent/vmtest-file"), 0o644);
    let err = a.write_to(&mut Vec::new()).unwrap_err();
    assert_eq!(err.0, PathBuf::from("/nonexistent/vmtest-file"));
}

#[test]
fn later_entry_replaces_earlier_one() {
    let mut a = Archive::new();
    a.symlink("/bin/true", "busybox");
    a.bytes("/bin/true", "#!/bin/sh\n", 0o755);
    assert!(matches!(
        a.get("/bin/true").map(|e| &e.content),
        Some(Content::Bytes(_))
    ));
}

#[test]
fn guest_paths_must_be_absolute_and_plain() {
    assert_eq!(normalize(Path::new("/a//b/./c")).as_deref(), Some("/a/b/c"));
    assert_eq!(normalize(Path::new("a/b")), None);
    assert_eq!(normalize(Path::new("/a/../b")), None);
    assert_eq!(normalize(Path::new("/")), None);
}

#[test]
fn ldd_output_gives_libraries_and_loader() {
    let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
    assert_eq!(
        parse_ldd(text).unwrap(),
        [
            PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
            PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
            PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
        ]
    );
    let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
    assert!(err.contains("libfoo.so.1"), "{err}");
}

#[test]
fn run_script_quotes_words_and_checks_env_names() {
    let run = VmRun::new(["/bin/echo", "it's", "$HOME"]).env("A_1", "x y");
    assert_eq!(
        run_script(&run).unwrap(),
        "export A_1='x y'\nexec '/bin/echo' 'it'\\''s' '$HOME'\n"
    );
    assert_eq!(quote(""), "''");
    for bad in ["", "1A", "A-B", "A=B", "A B"] {
        let run = VmRun::new(["true"]).env(bad, "v");
        assert!(
            matches!(run_script(&run), Err(VmError::InvalidEnvName(ref n)) if n == bad),
            "{bad:?} accepted"
        );
    }
    assert!(matches!(
        run_script(&VmRun::default()),
        Err(VmError::EmptyCommand)
    ));
}

#[test]
fn output_parsing_finds_exit_code_and_setup_failure() {
    let p = parse_output("hello\nworld\n@@VMTEST-EXIT 7@@\n");
    assert_eq!(p.exit_code, Some(7));
    assert_eq!(p.console, "hello\nworld\n");
    assert_eq!(p.setup_failed, None);

    // A program may print something marker-like itself; the last marker wins.
    let p = parse_output("@@VMTEST-EXIT 3@@\nmore\n@@VMTEST-EXIT 0@@\n");
    assert_eq!(p.exit_code, Some(0));
    assert_eq!(p.console, "@@VMTEST-EXIT 3@@\nmore\n");

    let p = parse_output("partial output, then the vm died");
    assert_eq!(p.exit_code, None);
    assert_eq!(p.console, "partial output, then the vm died");

    let p = parse_output("@@VMTEST-SETUP-FAILED mount -t cgroup2 none /sys/fs/cgroup@@\n");
    assert_eq!(
        p.setup_failed.as_deref(),
        Some("mount -t cgroup2 none /sys/fs/cgroup")
    );
    assert_eq!(p.exit_code, None);
}

#[test]
fn elf_kind_tells_static_dynamic_and_data_apart() {
    let exe = std::env::current_exe().unwrap();
    assert_eq!(elf_kind(&exe).unwrap(), ElfKind::Dynamic);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    assert_eq!(elf_kind(&script).unwrap(), ElfKind::NotElf);
    // A hand-made ELF64 header with one PT_LOAD and no PT_INTERP is static.
    let mut elf = vec![0u8; 64 + 56];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
    elf[64..68].copy_from_slice(&1u32.to_le_bytes());
    let stat = dir.path().join("static");
    std::fs::write(&stat, &elf).unwrap();
    assert_eq!(elf_kind(&stat).unwrap(), ElfKind::Static);
    elf[64..68].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&stat, &elf).unwrap();
    assert_eq!(elf_kind(&stat).unwrap(), ElfKind::Dynamic);
}
