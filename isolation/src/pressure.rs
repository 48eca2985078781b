//! Node pressure stall information (PSI): `/proc/pressure/{cpu,memory,io}`.
//!
//! Each file holds a `some` line and (memory and io always; cpu since Linux 5.13) a `full` line:
//!
//! ```text
//! some avg10=0.41 avg60=0.12 avg300=0.00 total=1165558
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=334570
//! ```
//!
//! The averages are percentages with two decimals, parsed without floats into hundredths of a
//! percent (the fixed point of [`proto::NodePressure`]). procfs 0.18 parses these files too, but
//! slices `line[5..]` and panics on a truncated `some` line, and needs the `full` line for cpu,
//! which kernels before 5.13 do not write; so the parser is ours, and odd content is a
//! [`PressureParseError`], never a panic.

use std::io;
use std::path::{Path, PathBuf};

use proto::NodePressure;

use crate::error::{IsolationError, Result};

/// Where the kernel publishes node pressure.
pub const PROC_PRESSURE: &str = "/proc/pressure";

/// One `some` or `full` line: averages in hundredths of a percent, `total` in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PressureLine {
    pub avg10: u32,
    pub avg60: u32,
    pub avg300: u32,
    pub total_us: u64,
}

/// One pressure file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    pub some: PressureLine,
    /// Missing in the cpu file of kernels before 5.13.
    pub full: Option<PressureLine>,
}

/// Why the text of a pressure file could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PressureParseError {
    #[error("no \"some\" line")]
    MissingSome,
    #[error("line {line}: expected \"some\" or \"full\", found {found:?}")]
    UnknownLine { line: usize, found: String },
    #[error("line {line}: a second {kind:?} line")]
    Repeated { line: usize, kind: &'static str },
    #[error("line {line}: missing {key}=")]
    MissingKey { line: usize, key: &'static str },
    #[error("line {line}: {key}={value:?} is not a percentage from 0.00 to 100.00")]
    BadAverage {
        line: usize,
        key: &'static str,
        value: String,
    },
    #[error("line {line}: total={value:?} is not a number of microseconds")]
    BadTotal { line: usize, value: String },
}

/// `"12.34"` → 1234; at most two decimals, at most 100.00.
fn parse_percent(text: &str) -> Option<u32> {
    let (int, frac) = match text.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 3 || frac.len() > 2 || !digits(int) || !digits(frac) {
        return None;
    }
    let int: u32 = int.parse().ok()?;
    let frac: u32 = match frac.len() {
        0 => 0,
        1 => frac.parse::<u32>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    Some(int * 100 + frac).filter(|v| *v <= NodePressure::MAX)
}

fn parse_line(
    line: usize,
    fields: std::str::SplitWhitespace<'_>,
) -> Result<PressureLine, PressureParseError> {
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for field in fields {
        // Keys this version does not know are skipped: a newer kernel may add some.
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let avg = |key: &'static str| {
            parse_percent(value).ok_or_else(|| PressureParseError::BadAverage {
                line,
                key,
                value: value.to_owned(),
            })
        };
        match key {
            "avg10" => avg10 = Some(avg("avg10")?),
            "avg60" => avg60 = Some(avg("avg60")?),
            "avg300" => avg300 = Some(avg("avg300")?),
            "total" => {
                total = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| PressureParseError::BadTotal {
                            line,
                            value: value.to_owned(),
                        })?,
                )
            }
            _ => {}
        }
    }
    let need = |v: Option<u32>, key| v.ok_or(PressureParseError::MissingKey { line, key });
    Ok(PressureLine {
        avg10: need(avg10, "avg10")?,
        avg60: need(avg60, "avg60")?,
        avg300: need(avg300, "avg300")?,
        total_us: total.ok_or(PressureParseError::MissingKey { line, key: "total" })?,
    })
}

/// Parses the text of one pressure file (lines numbered from 1 in errors).
pub fn parse_pressure(text: &str) -> Result<Pressure, PressureParseError> {
    let (mut some, mut full) = (None, None);
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let mut fields = raw.split_whitespace();
        let Some(kind) = fields.next() else {
            continue;
        };
        let (slot, kind) = match kind {
            "some" => (&mut some, "some"),
            "full" => (&mut full, "full"),
            other => {
                return Err(PressureParseError::UnknownLine {
                    line,
                    found: other.chars().take(32).collect(),
                })
            }
        };
        if slot.is_some() {
            return Err(PressureParseError::Repeated { line, kind });
        }
        *slot = Some(parse_line(line, fields)?);
    }
    Ok(Pressure {
        some: some.ok_or(PressureParseError::MissingSome)?,
        full,
    })
}

/// Reads and parses `dir/name`; `Ok(None)` when the file is absent or the kernel refuses it
/// (PSI compiled out, or off at boot with `psi=0`).
fn read_one(dir: &Path, name: &str) -> Result<Option<Pressure>> {
    let path: PathBuf = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if psi_unavailable(&e) => return Ok(None),
        Err(e) => return Err(IsolationError::io("read", path, e)),
    };
    parse_pressure(&text)
        .map(Some)
        .map_err(|source| IsolationError::Pressure { path, source })
}

fn psi_unavailable(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || e.raw_os_error() == Some(nix::libc::EOPNOTSUPP)
        || e.raw_os_error() == Some(nix::libc::ENOTSUP)
}

/// The node's pressure from `dir` (normally [`PROC_PRESSURE`]): `Ok(None)` when the kernel
/// does not report PSI (no `dir`, or its files absent or refused); an error names the file that
/// could not be read or parsed.
pub fn read_node_pressure(dir: &Path) -> Result<Option<NodePressure>> {
    let Some(cpu) = read_one(dir, "cpu")? else {
        return Ok(None);
    };
    let Some(memory) = read_one(dir, "memory")? else {
        return Ok(None);
    };
    let Some(io) = read_one(dir, "io")? else {
        return Ok(None);
    };
    let full = |p: &Pressure| p.full.map(|f| f.avg10).unwrap_or(0);
    Ok(Some(NodePressure {
        cpu_some_avg10: cpu.some.avg10,
        memory_some_avg10: memory.some.avg10,
        memory_full_avg10: full(&memory),
        io_some_avg10: io.some.avg10,
        io_full_avg10: full(&io),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY: &str = "some avg10=0.41 avg60=0.12 avg300=0.00 total=1165558\n\
                          full avg10=0.10 avg60=0.00 avg300=0.00 total=334570\n";

    #[test]
    fn parses_real_format() {
        let p = parse_pressure(MEMORY).unwrap();
        assert_eq!(
            p.some,
            PressureLine {
                avg10: 41,
                avg60: 12,
                avg300: 0,
                total_us: 1_165_558
            }
        );
        assert_eq!(p.full.unwrap().avg10, 10);
        // cpu before Linux 5.13: only "some".
        let cpu = parse_pressure("some avg10=99.50 avg60=100.00 avg300=7.5 total=0\n").unwrap();
        assert_eq!(
            (cpu.some.avg10, cpu.some.avg60, cpu.some.avg300),
            (9950, 10_000, 750)
        );
        assert_eq!(cpu.full, None);
        // No trailing newline, extra spaces, an unknown key.
        let p = parse_pressure("some  avg10=1.00 avg60=2 avg300=3.00 total=4 new=9").unwrap();
        assert_eq!((p.some.avg10, p.some.avg60, p.some.total_us), (100, 200, 4));
    }

    #[test]
    fn odd_content_is_an_error_not_a_panic() {
        use PressureParseError::*;
        let bad: &[(&str, PressureParseError)] = &[
            ("", MissingSome),
            ("\n\n", MissingSome),
            (
                "some",
                MissingKey {
                    line: 1,
                    key: "avg10",
                },
            ),
            (
                "some avg10=0.41 avg60=0.12",
                MissingKey {
                    line: 1,
                    key: "avg300",
                },
            ),
            (
                "some avg10=0.41 avg60=0.12 avg300=0.00 total=",
                BadTotal {
                    line: 1,
                    value: String::new(),
                },
            ),
            (
                "full avg10=0.00 avg60=0.00 avg300=0.00 total=1",
                MissingSome,
            ),
            (
                "some avg10=1.5 avg60=0 avg300=0 total=1\nsome avg10=1 avg60=0 avg300=0 total=1",
                Repeated {
                    line: 2,
                    kind: "some",
                },
            ),
            (
                "someé avg10=0.41",
                UnknownLine {
                    line: 1,
                    found: "someé".into(),
                },
            ),
            (
                "\u{0}\u{1}garbage",
                UnknownLine {
                    line: 1,
                    found: "\u{0}\u{1}garbage".into(),
                },
            ),
        ];
        for (text, want) in bad {
            assert_eq!(parse_pressure(text).as_ref(), Err(want), "{text:?}");
        }
        for value in [
            "-1.00",
            "100.01",
            "NaN",
            "inf",
            "1e3",
            "0.123",
            ".5",
            "1.",
            "1.x",
            "99999999999",
        ] {
            let text = format!("some avg10={value} avg60=0 avg300=0 total=1");
            let err = parse_pressure(&text).unwrap_err();
            assert!(
                matches!(err, BadAverage { key: "avg10", .. }),
                "{value}: {err}"
            );
        }
        // Truncated at every byte of a real file: an answer or an error, never a panic.
        for n in 0..=MEMORY.len() {
            let _ = parse_pressure(&MEMORY[..n]);
        }
        let err = parse_pressure("some avg10=0.41 avg60=0.12 avg300=0.00 total=x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: total=\"x\" is not a number of microseconds"
        );
    }

    #[test]
    fn reads_a_directory_and_tells_missing_psi() {
        let dir = std::env::temp_dir().join(format!("corral-psi-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(read_node_pressure(&dir).unwrap(), None);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("cpu"),
            "some avg10=2.00 avg60=0 avg300=0 total=5\n",
        )
        .unwrap();
        std::fs::write(dir.join("memory"), MEMORY).unwrap();
        assert_eq!(read_node_pressure(&dir).unwrap(), None, "io missing");
        std::fs::write(
            dir.join("io"),
            "some avg10=1.20 avg60=0 avg300=0 total=5\nfull avg10=0.70 avg60=0 avg300=0 total=5\n",
        )
        .unwrap();
        let p = read_node_pressure(&dir).unwrap().unwrap();
        assert_eq!(
            p,
            NodePressure {
                cpu_some_avg10: 200,
                memory_some_avg10: 41,
                memory_full_avg10: 10,
                io_some_avg10: 120,
                io_full_avg10: 70,
            }
        );
        std::fs::write(dir.join("io"), "garbage").unwrap();
        let err = read_node_pressure(&dir).unwrap_err().to_string();
        assert!(err.contains("/io") && err.contains("garbage"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        // This host: PSI or not, reading never fails.
        read_node_pressure(Path::new(PROC_PRESSURE)).unwrap();
    }
}
