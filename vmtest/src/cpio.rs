//! A minimal writer for the "newc" cpio format (the one the Linux initramfs loader reads).
//!
//! Entries are kept in a sorted map keyed by their absolute guest path, so every parent
//! directory is written before its children and a later entry for the same path replaces an
//! earlier one. The archive is written uncompressed: the kernel accepts that, and it saves
//! both the compression on the host and the (slow, emulated) decompression in the guest.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const TRAILER: &str = "TRAILER!!!";

/// What one archive entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    Dir,
    /// A regular file whose bytes are read from this host path when the archive is written.
    HostFile(PathBuf),
    /// A regular file with these bytes.
    Bytes(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
    /// A character device node (major, minor).
    CharDev(u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub content: Content,
    /// Permission bits (the file type bits are added from `content`).
    pub perm: u32,
}

/// An initramfs under construction. Keys are normalized absolute guest paths ("/bin/sh").
#[derive(Debug, Default)]
pub(crate) struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// Turns an absolute guest path into the normalized key ("/a/b"); `None` if it is relative, is
/// the root itself, or contains `..`.
pub(crate) fn normalize(guest: &Path) -> Option<String> {
    if !guest.is_absolute() {
        return None;
    }
    let mut parts = Vec::new();
    for c in guest.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_str()?.to_owned()),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

impl Archive {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds `key` (a normalized path from [`normalize`]) and any missing parent directories.
    pub(crate) fn insert(&mut self, key: &str, entry: Entry) {
        let mut parent = String::new();
        let segments: Vec<&str> = key.trim_start_matches('/').split('/').collect();
        for seg in &segments[..segments.len().saturating_sub(1)] {
            parent.push('/');
            parent.push_str(seg);
            self.entries.entry(parent.clone()).or_insert(Entry {
                content: Content::Dir,
                perm: 0o755,
            });
        }
        self.entries.insert(key.to_owned(), entry);
    }

    pub(crate) fn dir(&mut self, key: &str, perm: u32) {
        self.insert(
            key,
            Entry {
                content: Content::Dir,
                perm,
            },
        );
    }

    pub(crate) fn bytes(&mut self, key: &str, data: impl Into<Vec<u8>>, perm: u32) {
        self.insert(
            key,
            Entry {
                content: Content::Bytes(data.into()),
                perm,
            },
        );
    }

    pub(crate) fn host_file(&mut self, key: &str, host: &Path, perm: u32) {
        self.insert(
            key,
            Entry {
                content: Content::HostFile(host.to_owned()),
                perm,
            },
        );
    }

    pub(crate) fn symlink(&mut self, key: &str, target: &str) {
        self.insert(
            key,
            Entry {
                content: Content::Symlink(target.to_owned()),
                perm: 0o777,
            },
        );
    }

    pub(crate) fn char_dev(&mut self, key: &str, major: u32, minor: u32, perm: u32) {
        self.insert(
            key,
            Entry {
                content: Content::CharDev(major, minor),
                perm,
            },
        );
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Writes the archive. Errors name the host file that could not be read.
    pub(crate) fn write_to(&self, out: &mut impl Write) -> Result<(), (PathBuf, io::Error)> {
        let mut w = Counting { inner: out, n: 0 };
        let none = PathBuf::new();
        for (ino, (key, entry)) in self.entries.iter().enumerate() {
            let name = &key[1..];
            let ino = u32::try_from(ino + 1).unwrap_or(u32::MAX);
            match &entry.content {
                Content::Dir => {
                    header(&mut w, ino, S_IFDIR | entry.perm, 2, 0, (0, 0), name)
                        .map_err(|e| (none.clone(), e))?;
                }
                Content::Bytes(data) => write_file(&mut w, ino, S_IFREG | entry.perm, name, data)
                    .map_err(|e| (none.clone(), e))?,
                Content::Symlink(target) => {
                    write_file(&mut w, ino, S_IFLNK | 0o777, name, target.as_bytes())
                        .map_err(|e| (none.clone(), e))?
                }
                Content::CharDev(major, minor) => {
                    let mode = S_IFCHR | entry.perm;
                    header(&mut w, ino, mode, 1, 0, (*major, *minor), name)
                        .map_err(|e| (none.clone(), e))?;
                }
                Content::HostFile(host) => {
                    let mut f = File::open(host).map_err(|e| (host.clone(), e))?;
                    let len = f.metadata().map_err(|e| (host.clone(), e))?.len();
                    let len32 = u32::try_from(len).map_err(|_| {
                        (
                            host.clone(),
                            io::Error::new(io::ErrorKind::InvalidInput, "file larger than 4 GiB"),
                        )
                    })?;
                    header(&mut w, ino, S_IFREG | entry.perm, 1, len32, (0, 0), name)
                        .map_err(|e| (host.clone(), e))?;
                    let copied =
                        io::copy(&mut (&mut f).take(len), &mut w).map_err(|e| (host.clone(), e))?;
                    if copied != len {
                        return Err((
                            host.clone(),
                            io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while read"),
                        ));
                    }
                    pad(&mut w).map_err(|e| (host.clone(), e))?;
                }
            }
        }
        header(&mut w, 0, 0, 1, 0, (0, 0), TRAILER).map_err(|e| (none.clone(), e))?;
        w.flush().map_err(|e| (none, e))
    }
}

fn write_file<W: Write>(
    w: &mut Counting<W>,
    ino: u32,
    mode: u32,
    name: &str,
    data: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry larger than 4 GiB"))?;
    header(w, ino, mode, 1, len, (0, 0), name)?;
    w.write_all(data)?;
    pad(w)
}

fn header<W: Write>(
    w: &mut Counting<W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    filesize: u32,
    (rdevmajor, rdevminor): (u32, u32),
    name: &str,
) -> io::Result<()> {
    let namesize = u32::try_from(name.len() + 1)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
    write!(
        w,
        "070701{ino:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{filesize:08X}\
         {devmajor:08X}{devminor:08X}{rdevmajor:08X}{rdevminor:08X}{namesize:08X}{check:08X}",
        uid = 0,
        gid = 0,
        mtime = 0,
        devmajor = 0,
        devminor = 0,
        check = 0,
    )?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w)
}

fn pad<W: Write>(w: &mut Counting<W>) -> io::Result<()> {
    let rem = (w.n % 4) as usize;
    if rem != 0 {
        w.write_all(&[0u8; 4][..4 - rem])?;
    }
    Ok(())
}

/// Tracks the offset so entries can be padded to 4 bytes.
struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
