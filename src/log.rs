//! Logging to stderr and/or `logFile`, never stdout. Levels follow Multus:
//! panic < error < verbose < debug.

use std::io::Write;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Panic,
    Error,
    Verbose,
    Debug,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "panic" => Level::Panic,
            "error" => Level::Error,
            "verbose" | "info" => Level::Verbose,
            "debug" => Level::Debug,
            _ => return None,
        })
    }
}

struct Logger {
    level: Level,
    to_stderr: bool,
    file: Option<std::sync::Mutex<std::fs::File>>,
    prefix: String,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Configure once per process. `prefix` names the call (command, container).
pub fn init(level: Level, to_stderr: bool, file: Option<&str>, prefix: String) {
    let file = file.filter(|f| !f.is_empty()).and_then(|f| {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(f)
            .ok()
            .map(std::sync::Mutex::new)
    });
    let _ = LOGGER.set(Logger {
        level,
        to_stderr,
        file,
        prefix,
    });
}

/// Longest log line written (without its newline). Longer ones are cut,
/// with a marker saying how many bytes were cut: a message built from what
/// a plugin printed (at most 64 KiB of stderr, 1 MiB of stdout) stays one
/// readable line.
pub const MAX_LINE: usize = 4096;

/// Cut `line` to at most `MAX_LINE` bytes (at a character boundary),
/// marker included.
fn bounded(mut line: String) -> String {
    if line.len() <= MAX_LINE {
        return line;
    }
    // The marker's length depends on the count; 40 bytes always fit it.
    let mut keep = MAX_LINE - 40;
    while !line.is_char_boundary(keep) {
        keep -= 1;
    }
    let cut = line.len() - keep;
    line.truncate(keep);
    line.push_str(&format!(" [... {cut} bytes cut]"));
    line
}

fn log(level: Level, tag: &str, msg: &str) {
    let Some(l) = LOGGER.get() else {
        if level <= Level::Error {
            eprintln!("{}", bounded(format!("multimesh {tag}: {msg}")));
        }
        return;
    };
    if level > l.level {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut line = bounded(format!(
        "{}.{:06} multimesh[{}] {tag} {}: {msg}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        l.prefix
    ));
    line.push('\n');
    if l.to_stderr {
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
    if let Some(f) = &l.file {
        if let Ok(mut f) = f.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

pub fn error(msg: &str) {
    log(Level::Error, "error", msg)
}
pub fn verbose(msg: &str) {
    log(Level::Verbose, "info", msg)
}
pub fn debug(msg: &str) {
    log(Level::Debug, "debug", msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_with_a_marker() {
        assert_eq!(bounded("short".into()), "short");
        let exact = "x".repeat(MAX_LINE);
        assert_eq!(bounded(exact.clone()), exact);
        let long = "é".repeat(100_000); // 200,000 bytes, 2-byte characters
        let b = bounded(long.clone());
        assert!(b.len() <= MAX_LINE, "{}", b.len());
        let kept = b.find(" [... ").unwrap();
        let cut: usize = b[kept + 6..].split(' ').next().unwrap().parse().unwrap();
        assert_eq!(kept + cut, long.len());
        assert!(b.ends_with(" bytes cut]"));
    }
}
