//! The CNI call journal: how the one-shot plugin hands each call's outcome
//! to the node agent's metrics without waiting on anything.
//!
//! `cniDir/journal/calls`: one line per CNI call, `COMMAND CODE SECONDS`
//! (`ADD 0 0.012345`; CODE is the CNI error code, 0 for success), appended
//! by the plugin after the command ended with one `write(2)` on an
//! `O_APPEND` descriptor, so concurrent plugins never interleave within a
//! line. Written only while the directory exists: the agent creates it, so
//! a node without the agent writes nothing. Bounded: a plugin that finds
//! the file at `MAX_BYTES` or more renames it to `calls.1` (replacing the
//! previous one) and starts a new one; two plugins rotating at once may
//! lose a rotated file's lines (metrics, not state). The agent reads both
//! files incrementally (`Reader`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The journal's directory under cniDir.
pub const DIR: &str = "journal";
const FILE: &str = "calls";
const ROTATED: &str = "calls.1";
/// Size at which the plugin rotates the journal.
pub const MAX_BYTES: u64 = 1 << 20;
/// The commands a line may name (others are skipped by the reader).
pub const COMMANDS: [&str; 5] = ["ADD", "DEL", "CHECK", "GC", "STATUS"];
/// Highest CNI error code the reader takes (a longer line is skipped).
pub const MAX_CODE: u32 = 999;
/// Longest line the reader takes.
const MAX_LINE: usize = 64;
/// Most bytes read from one file per poll (a rotated file is at most
/// `MAX_BYTES` plus a line).
const READ_LIMIT: u64 = 2 * MAX_BYTES;

/// Append one call's outcome, if the agent asked for a journal. Never
/// fails the call: errors are ignored.
pub fn append(cni_dir: &Path, command: &str, code: u32, took: Duration) {
    let dir = cni_dir.join(DIR);
    let path = dir.join(FILE);
    let open = || {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
    };
    // Without the directory open fails (ENOENT): no agent, no journal.
    let Ok(mut f) = open() else {
        return;
    };
    if f.metadata().is_ok_and(|m| m.len() >= MAX_BYTES) {
        let _ = fs::rename(&path, dir.join(ROTATED));
        match open() {
            Ok(n) => f = n,
            Err(_) => return,
        }
    }
    let line = format!("{command} {code} {:.6}\n", took.as_secs_f64());
    let _ = f.write_all(line.as_bytes());
}

/// One journal line.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub command: &'static str,
    pub code: u32,
    pub seconds: f64,
}

/// Parse a line; None for anything that is not a well-formed call.
pub fn parse(line: &str) -> Option<Call> {
    if line.len() > MAX_LINE {
        return None;
    }
    let mut w = line.split(' ');
    let cmd = w.next()?;
    let command = COMMANDS.iter().find(|c| **c == cmd)?;
    let code: u32 = w.next()?.parse().ok().filter(|c| *c <= MAX_CODE)?;
    let seconds: f64 = w
        .next()?
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)?;
    if w.next().is_some() {
        return None;
    }
    Some(Call {
        command,
        code,
        seconds,
    })
}

/// Reads the journal incrementally: the calls appended since the last
/// `poll`, following rotations (the rest of the rotated file first).
pub struct Reader {
    dir: PathBuf,
    /// Inode of the file being read, and how far.
    inode: Option<u64>,
    offset: u64,
    /// A line not yet complete.
    partial: Vec<u8>,
}

impl Reader {
    /// Create the journal directory (so plugins start writing) and start
    /// at the end of what is already there.
    pub fn open(cni_dir: &Path) -> std::io::Result<Reader> {
        let dir = cni_dir.join(DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut r = Reader {
            dir,
            inode: None,
            offset: 0,
            partial: Vec::new(),
        };
        if let Ok(m) = fs::metadata(r.dir.join(FILE)) {
            r.inode = Some(m.ino());
            r.offset = m.len();
        }
        Ok(r)
    }

    /// The calls appended since the last poll (at most `READ_LIMIT`
    /// bytes read per file per poll).
    pub fn poll(&mut self) -> Vec<Call> {
        let mut out = Vec::new();
        let cur = fs::metadata(self.dir.join(FILE)).ok();
        if let Some(ino) = self.inode {
            if cur.as_ref().map(MetadataExt::ino) != Some(ino) {
                // Rotated: finish the old file (now calls.1) if it is it.
                let rotated = self.dir.join(ROTATED);
                if fs::metadata(&rotated).is_ok_and(|m| m.ino() == ino) {
                    self.read_from(&rotated, &mut out);
                }
                self.partial.clear();
                self.inode = None;
                self.offset = 0;
            }
        }
        if let Some(m) = cur {
            if self.inode.is_none() {
                self.inode = Some(m.ino());
                self.offset = 0;
            }
            if m.len() < self.offset {
                self.offset = 0; // truncated by hand
            }
            self.read_from(&self.dir.join(FILE), &mut out);
        }
        out
    }

    fn read_from(&mut self, path: &Path, out: &mut Vec<Call>) {
        let Ok(mut f) = File::open(path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.take(READ_LIMIT).read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let end = self
            .partial
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        for line in self.partial[..end].split(|&b| b == b'\n') {
            if let Some(c) = std::str::from_utf8(line).ok().and_then(parse) {
                out.push(c);
            }
        }
        self.partial.drain(..end);
        if self.partial.len() > MAX_LINE {
            self.partial.clear(); // not a journal line: drop it
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mm-journal-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn nothing_without_the_agent() {
        let d = tmp("off");
        append(&d, "ADD", 0, Duration::from_millis(5));
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn lines_round_trip_and_rotation_loses_nothing() {
        let d = tmp("rot");
        append(&d, "ADD", 0, Duration::ZERO); // before the agent: not read
        let mut r = Reader::open(&d).unwrap();
        append(&d, "ADD", 0, Duration::from_micros(12_345));
        append(&d, "DEL", 107, Duration::from_millis(2));
        let got = r.poll();
        assert_eq!(
            got,
            [
                Call {
                    command: "ADD",
                    code: 0,
                    seconds: 0.012345
                },
                Call {
                    command: "DEL",
                    code: 107,
                    seconds: 0.002
                }
            ]
        );
        assert!(r.poll().is_empty());
        // Past MAX_BYTES the plugin rotates; the reader finishes the old
        // file first, then reads the new one, and counts every line.
        let n = (MAX_BYTES / "CHECK 0 0.000001\n".len() as u64) + 10;
        for _ in 0..n {
            append(&d, "CHECK", 0, Duration::from_micros(1));
        }
        let mut total = r.poll().len() as u64;
        // A read is bounded per poll: keep polling until caught up.
        for _ in 0..4 {
            total += r.poll().len() as u64;
        }
        assert_eq!(total, n);
        let j = d.join(DIR);
        assert!(j.join(ROTATED).exists());
        assert!(fs::metadata(j.join(FILE)).unwrap().len() < MAX_BYTES);
        fs::remove_dir_all(&d).unwrap();
    }

    /// What a CNI call pays for its journal line: one open, one fstat,
    /// one write, one close (measured, bounded).
    #[test]
    fn an_append_costs_microseconds() {
        let d = tmp("cost");
        let mut r = Reader::open(&d).unwrap();
        const N: u32 = 2000;
        let t = std::time::Instant::now();
        for _ in 0..N {
            append(&d, "ADD", 0, Duration::from_millis(40));
        }
        let each = t.elapsed() / N;
        println!("journal append: {} ns per call", each.as_nanos());
        assert!(each < Duration::from_micros(500), "{each:?}");
        assert_eq!(r.poll().len(), N as usize);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn malformed_lines_are_skipped() {
        for bad in [
            "",
            "ADD",
            "ADD 0",
            "EXEC 0 0.1",
            "ADD -1 0.1",
            "ADD 1000 0.1",
            "ADD 0 NaN",
            "ADD 0 -1",
            "ADD 0 inf",
            "ADD 0 0.1 extra",
            &format!("ADD 0 0.{}", "1".repeat(80)),
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse("GC 11 1.5").unwrap().code, 11);
        // A garbage line without end is dropped, the next good line read.
        let d = tmp("junk");
        let mut r = Reader::open(&d).unwrap();
        let p = d.join(DIR).join(FILE);
        fs::write(&p, "x".repeat(10_000)).unwrap();
        assert!(r.poll().is_empty());
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"\nSTATUS 0 0.5\n").unwrap();
        assert_eq!(r.poll().len(), 1);
        fs::remove_dir_all(&d).unwrap();
    }
}
