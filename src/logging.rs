//! The sink behind the `log` facade: stderr and/or `logFile`, never
//! stdout. Every crate's `log` records go to the same place. Levels follow
//! Multus (panic < error < verbose < debug) and set `log`'s max level, so a
//! disabled level's message is never formatted.

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

    /// Multus's panic level logs nothing multimesh writes (it never
    /// panics on purpose); verbose is `log`'s info (and warn).
    fn filter(self) -> log::LevelFilter {
        match self {
            Level::Panic => log::LevelFilter::Off,
            Level::Error => log::LevelFilter::Error,
            Level::Verbose => log::LevelFilter::Info,
            Level::Debug => log::LevelFilter::Debug,
        }
    }
}

/// Where records go once [`init`] ran.
struct Output {
    to_stderr: bool,
    file: Option<std::sync::Mutex<std::fs::File>>,
    prefix: String,
}

/// Before `init`: errors only, to stderr, without a prefix.
struct Sink {
    output: OnceLock<Output>,
}

static SINK: Sink = Sink {
    output: OnceLock::new(),
};

/// Install the sink (errors to stderr) at process start.
pub fn install() {
    if log::set_logger(&SINK).is_ok() {
        log::set_max_level(log::LevelFilter::Error);
    }
}

/// Configure once per process. `prefix` names the call (command, container).
pub fn init(level: Level, to_stderr: bool, file: Option<&str>, prefix: String) {
    install();
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
    if SINK
        .output
        .set(Output {
            to_stderr,
            file,
            prefix,
        })
        .is_ok()
    {
        log::set_max_level(level.filter());
    }
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

impl log::Log for Sink {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let tag = match r.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug | log::Level::Trace => "debug",
        };
        // Other crates' records name their target (their module).
        let from = match r.target() {
            t if t.starts_with("multimesh") => String::new(),
            t => format!(" [{t}]"),
        };
        let Some(o) = self.output.get() else {
            eprintln!(
                "{}",
                bounded(format!("multimesh {tag}{from}: {}", r.args()))
            );
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = bounded(format!(
            "{}.{:06} multimesh[{}] {tag} {}{from}: {}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            o.prefix,
            r.args()
        ));
        line.push('\n');
        if o.to_stderr {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        if let Some(f) = &o.file {
            if let Ok(mut f) = f.lock() {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts how often it is formatted.
    struct Counted<'a>(&'a std::sync::atomic::AtomicUsize);
    impl std::fmt::Display for Counted<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            f.write_str("counted")
        }
    }

    #[test]
    fn disabled_levels_are_never_formatted() {
        let path = std::env::temp_dir().join(format!("mm-log-{}", std::process::id()));
        init(Level::Verbose, false, path.to_str(), "test".into());
        let n = std::sync::atomic::AtomicUsize::new(0);
        log::debug!("{}", Counted(&n));
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 0);
        log::info!("{}", Counted(&n));
        log::warn!(target: "netlink_sys", "from a crate");
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(text.contains(" info test: counted\n"), "{text}");
        assert!(!text.contains("debug"), "{text}");
        assert!(
            text.contains(" warning test [netlink_sys]: from a crate"),
            "{text}"
        );
    }

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
