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

fn log(level: Level, tag: &str, msg: &str) {
    let Some(l) = LOGGER.get() else {
        if level <= Level::Error {
            eprintln!("multimesh {tag}: {msg}");
        }
        return;
    };
    if level > l.level {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let line = format!(
        "{}.{:06} multimesh[{}] {tag} {}: {msg}\n",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        l.prefix
    );
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
