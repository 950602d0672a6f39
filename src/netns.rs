//! Network namespaces. multimesh never moves one of its own threads into a
//! pod netns for longer than a scoped closure on a dedicated thread; tools
//! (iptables-restore, nft) are run in the pod netns by entering it in the
//! forked child before exec, so the parent is never affected.

use crate::error::{code, CniError, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// An open handle on a network namespace file (/var/run/netns/X, /proc/PID/ns/net).
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Open a netns path. Ok(None) when the path does not exist (DEL treats
    /// that as "already gone").
    pub fn open(path: &Path) -> Result<Option<NetNs>> {
        match File::open(path) {
            Ok(file) => {
                // Make sure it is really a network namespace: setns with
                // CLONE_NEWNET on a non-netns fd would fail later anyway, but
                // the error is clearer here.
                let ns = NetNs {
                    file,
                    path: path.to_path_buf(),
                };
                ns.verify()?;
                Ok(Some(ns))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::new(
                code::NETNS,
                format!("cannot open netns {}: {e}", path.display()),
            )),
        }
    }

    fn verify(&self) -> Result<()> {
        // NS_GET_NSTYPE = _IO(0xb7, 0x3): the namespace type of an nsfs fd.
        nix::ioctl_none!(ns_get_nstype, 0xb7, 0x3);
        // SAFETY: an argument-less ioctl on an fd this NetNs owns; on a
        // file that is not a namespace the kernel answers an error.
        let kind = unsafe { ns_get_nstype(self.file.as_raw_fd()) };
        if kind == Ok(libc::CLONE_NEWNET) {
            Ok(())
        } else {
            Err(CniError::new(
                code::NETNS,
                format!("{} is not a network namespace", self.path.display()),
            ))
        }
    }

    /// The namespace's identity: its nsfs device and inode, the same through
    /// every path that names it (a bind mount, /proc/PID/ns/net).
    pub fn key(&self) -> Result<String> {
        use std::os::unix::fs::MetadataExt;
        let m = self.file.metadata().map_err(|e| {
            CniError::new(
                code::NETNS,
                format!("stat netns {}: {e}", self.path.display()),
            )
        })?;
        Ok(format!("{:x}-{}", m.dev(), m.ino()))
    }

    /// Lock this network namespace against other multimesh processes
    /// (`flock` on the namespace file itself: every path to it is the same
    /// inode, and no file is created for it). Held while capture ownership
    /// changes hands; released when the guard is dropped.
    pub fn lock(&self) -> Result<NetNsLock> {
        let fail = |e: String| {
            CniError::new(
                code::NETNS,
                format!("lock netns {}: {e}", self.path.display()),
            )
        };
        // A duplicate shares the open file description, which is what the
        // lock belongs to; dropping the guard unlocks it.
        let dup = self.file.try_clone().map_err(|e| fail(e.to_string()))?;
        Flock::lock(dup, FlockArg::LockExclusive)
            .map(NetNsLock)
            .map_err(|(_, e)| fail(e.to_string()))
    }

    /// Build a Command that runs inside this netns.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.file.as_raw_fd();
        // SAFETY (pre_exec): the closure runs in the forked child before
        // exec and only calls setns(2), which is async-signal-safe; `fd`
        // stays open in the child (the parent keeps this NetNs alive until
        // the spawn returns).
        unsafe {
            cmd.pre_exec(move || {
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                setns(fd, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        cmd
    }

    /// Run `f` on a dedicated thread that has entered this netns. The thread
    /// ends with the closure, so no thread outlives its stay in the pod netns.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let fd = self
            .file
            .try_clone()
            .map_err(|e| CniError::new(code::NETNS, format!("dup netns fd: {e}")))?;
        let h = std::thread::spawn(move || {
            // setns changes only this thread (threads are tasks on Linux).
            setns(&fd, CloneFlags::CLONE_NEWNET)?;
            Ok::<T, nix::Error>(f())
        });
        match h.join() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CniError::new(code::NETNS, format!("setns: {e}"))),
            Err(_) => Err(CniError::new(code::NETNS, "netns worker thread failed")),
        }
    }
}

/// A held `NetNs::lock` (unlocked when dropped).
pub struct NetNsLock(#[allow(dead_code)] Flock<File>);

/// Output of a tool run with a deadline.
/// What a child run by `run_limited` may do before its process group is
/// killed: run for `timeout`, print `stdout` / `stderr` bytes. Delegates and
/// tools share the mechanism; each caller names its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub stdout: usize,
    pub stderr: usize,
}

impl Limits {
    /// Most stdout a delegate may print: a CNI result or error is a few KiB.
    pub const DELEGATE_STDOUT: usize = 1 << 20;
    /// Most stderr kept from any child (delegate or tool).
    pub const STDERR: usize = 64 << 10;
    /// Most stdout a node tool may print: `iptables-save` of a node with
    /// many Services (the variant probe reads the host's tables) can run to
    /// a few MiB; the tools are the node's own, so this is only a backstop.
    pub const TOOL_STDOUT: usize = 64 << 20;

    /// A delegate plugin (tenant-selectable config, node-installed binary).
    pub fn delegate(timeout: Duration) -> Limits {
        Limits {
            timeout,
            stdout: Self::DELEGATE_STDOUT,
            stderr: Self::STDERR,
        }
    }

    /// A node tool (iptables-restore, nft, ip).
    pub fn tool(timeout: Duration) -> Limits {
        Limits {
            timeout,
            stdout: Self::TOOL_STDOUT,
            stderr: Self::STDERR,
        }
    }
}

/// Why `run_limited` killed a child's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Still running after this long.
    Timeout(Duration),
    /// Printed more than this many bytes on stdout.
    Stdout(usize),
    /// Printed more than this many bytes on stderr.
    Stderr(usize),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Timeout(d) => write!(f, "timed out after {}", seconds(*d)),
            Stop::Stdout(n) => write!(f, "printed more than {} on stdout", bytes(*n)),
            Stop::Stderr(n) => write!(f, "printed more than {} on stderr", bytes(*n)),
        }
    }
}

/// "120 s", "1.5 s".
pub fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// "1 MiB", "64 KiB", "100 bytes".
fn bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Output of a tool run with limits.
pub struct ToolOutput {
    /// The exit code; None when killed (by us or by a signal).
    pub status: Option<i32>,
    /// Set when `run_limited` killed the process group (then `status` is None).
    pub stopped: Option<Stop>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    pub fn ok(&self) -> bool {
        self.status == Some(0) && self.stopped.is_none()
    }
    /// Short one-line description of a failure, for error messages.
    pub fn failure(&self) -> String {
        let err = self.stderr.trim();
        let err: String = err.chars().take(400).collect();
        match (self.stopped, self.status) {
            (Some(s), _) => format!("killed: {s}: {err}"),
            (None, Some(c)) => format!("exit {c}: {err}"),
            (None, None) => format!("killed: {err}"),
        }
    }
}

/// `run_limited` with a tool's limits (`Limits::tool`).
pub fn run_tool(cmd: Command, stdin: &[u8], timeout: Duration) -> std::io::Result<ToolOutput> {
    run_limited(cmd, stdin, Limits::tool(timeout))
}

/// Run a command with stdin, capturing output within `limits`.
///
/// The child runs in its own process group. On timeout, or when it prints
/// more than a limit allows, the whole group is SIGKILLed at once (so a
/// grandchild dies too) and `stopped` says why; what was kept is at most
/// the limits.
///
/// Single-threaded: stdin is written, then stdout, stderr and a pidfd of the
/// child are polled together until the child exits (or is killed). A
/// grandchild that keeps the pipes open cannot make us wait: once the child
/// has exited, only what is already buffered is read, and the grandchild is
/// left alone.
pub fn run_limited(mut cmd: Command, stdin: &[u8], limits: Limits) -> std::io::Result<ToolOutput> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // setpgid(0, 0) in the forked child, before any pre_exec closure (such
    // as `NetNs::command`'s setns) runs: std applies the process group
    // first and the closures last, so both take effect.
    cmd.process_group(0);
    let deadline = std::time::Instant::now() + limits.timeout;
    let mut child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    // The child leads its own group, and stays unreaped until `child.wait()`
    // below: until then the group id cannot name anyone else's group.
    let kill_group = || {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    };
    // SAFETY: pidfd_open(2) has no wrapper in nix or std (stable); a raw
    // syscall with two integer arguments on our own unreaped child. The
    // result is checked and owned just below.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        kill_group();
        let _ = child.wait();
        return Err(e);
    }
    // SAFETY: a fresh fd we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut input = child.stdin.take();
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let fds: [Option<std::os::fd::BorrowedFd>; 3] = [
        input.as_ref().map(|x| x.as_fd()),
        out.as_ref().map(|x| x.as_fd()),
        err.as_ref().map(|x| x.as_fd()),
    ];
    for f in fds.into_iter().flatten() {
        let fl = fcntl(f, FcntlArg::F_GETFL).unwrap_or(0);
        let _ = fcntl(
            f,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK),
        );
    }
    let mut written = 0;
    if stdin.is_empty() {
        input = None;
    }
    let (mut so, mut se) = (Vec::new(), Vec::new());
    let mut exited = false;
    let mut stopped: Option<Stop> = None;
    loop {
        if let Some(w) = input.as_mut() {
            match w.write(&stdin[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EPIPE: the child does not read its stdin; not our error.
                Err(_) => written = stdin.len(),
            }
            if written >= stdin.len() {
                input = None; // closes the pipe: EOF for the child
            }
        }
        let over = if !drain(&mut out, &mut so, limits.stdout) {
            Some(Stop::Stdout(limits.stdout))
        } else if !drain(&mut err, &mut se, limits.stderr) {
            Some(Stop::Stderr(limits.stderr))
        } else {
            None
        };
        if let Some(s) = over {
            kill_group();
            stopped = Some(s);
            break;
        }
        if exited {
            // Whatever is buffered has been read; only a grandchild could
            // still hold the pipes open, and we do not wait for it.
            break;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            kill_group();
            stopped = Some(Stop::Timeout(limits.timeout));
            break;
        }
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if let Some(w) = input.as_ref() {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLOUT));
        }
        if let Some(r) = out.as_ref() {
            fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
        }
        if let Some(r) = err.as_ref() {
            fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Err(nix::Error::EINTR) => {}
            Err(e) => {
                drop(fds);
                kill_group();
                let _ = child.wait();
                return Err(e.into());
            }
            Ok(_) => {
                if fds[0]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLIN))
                {
                    exited = true;
                }
            }
        }
    }
    // Close our ends first: a child blocked writing to a full pipe is dead
    // already (SIGKILL), and nothing more is read.
    drop((input, out, err));
    let status = child.wait()?;
    Ok(ToolOutput {
        status: if stopped.is_some() {
            None
        } else {
            status.code()
        },
        stopped,
        stdout: String::from_utf8_lossy(&so).into_owned(),
        stderr: String::from_utf8_lossy(&se).into_owned(),
    })
}

/// Read what is available from a non-blocking pipe into `buf`, keeping at
/// most `limit` bytes; drop the pipe at EOF. False when the child printed
/// more than `limit` (what is kept is then cut to `limit`).
fn drain<R: Read>(pipe: &mut Option<R>, buf: &mut Vec<u8>, limit: usize) -> bool {
    let Some(p) = pipe.as_mut() else { return true };
    let mut chunk = [0u8; 16384];
    loop {
        match p.read(&mut chunk) {
            Ok(0) => {
                *pipe = None;
                return true;
            }
            Ok(n) => {
                if buf.len() + n > limit {
                    let room = limit - buf.len();
                    buf.extend_from_slice(&chunk[..room]);
                    return false;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return true, // WouldBlock: nothing more for now
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn large_stdin_round_trips_without_deadlock() {
        let data: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let out = run_tool(Command::new("cat"), &data, Duration::from_secs(10)).unwrap();
        assert!(out.ok());
        assert_eq!(out.stdout.as_bytes(), &data[..]);
    }

    #[test]
    fn captures_both_streams_and_exit_code() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = run_tool(c, b"", Duration::from_secs(10)).unwrap();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn deadline_kills_a_hung_tool() {
        let t = Instant::now();
        let mut c = Command::new("sleep");
        c.arg("30");
        let out = run_tool(c, b"", Duration::from_millis(200)).unwrap();
        assert_eq!(out.status, None);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_grandchild_holding_the_pipes_does_not_block() {
        let t = Instant::now();
        let mut c = Command::new("sh");
        c.args(["-c", "sleep 3 & echo done"]);
        let out = run_tool(c, b"", Duration::from_secs(20)).unwrap();
        assert!(out.ok());
        assert_eq!(out.stdout, "done\n");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    /// Is `pid` gone (or a zombie waiting for init)?
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => s
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        }
    }

    /// Wait (bounded) until `pid` is gone.
    fn assert_gone(pid: u32) {
        let t = Instant::now();
        while !gone(pid) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone(pid), "process {pid} survived");
    }

    /// A shell script that starts a background `sleep` (its pid in a temp
    /// file), then runs `then`. Returns the command and the pid file.
    fn with_grandchild(tag: &str, then: &str) -> (Command, PathBuf) {
        let f = std::env::temp_dir().join(format!("mm-netns-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&f);
        let mut c = Command::new("sh");
        c.args([
            "-c",
            &format!("sleep 300 & echo $! > {}; {then}", f.display()),
        ]);
        (c, f)
    }

    fn pid_in(f: &Path) -> u32 {
        let pid = std::fs::read_to_string(f).unwrap().trim().parse().unwrap();
        let _ = std::fs::remove_file(f);
        pid
    }

    #[test]
    fn endless_stdout_is_cut_at_the_limit_and_the_group_killed() {
        let t = Instant::now();
        let (c, f) = with_grandchild("out", "yes");
        let out = run_limited(c, b"", Limits::delegate(Duration::from_secs(60))).unwrap();
        assert_eq!(out.stopped, Some(Stop::Stdout(1 << 20)));
        assert_eq!(out.status, None);
        assert!(!out.ok());
        assert_eq!(out.stdout.len(), 1 << 20);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(
            out.failure().contains("printed more than 1 MiB on stdout"),
            "{}",
            out.failure()
        );
        assert_gone(pid_in(&f));
    }

    #[test]
    fn endless_stderr_is_cut_at_the_limit() {
        let mut c = Command::new("sh");
        c.args(["-c", "yes >&2"]);
        let out = run_limited(c, b"", Limits::delegate(Duration::from_secs(60))).unwrap();
        assert_eq!(out.stopped, Some(Stop::Stderr(64 << 10)));
        assert_eq!(out.stderr.len(), 64 << 10);
        assert!(out.failure().contains("more than 64 KiB on stderr"));
    }

    #[test]
    fn output_up_to_the_limit_is_kept() {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "head -c 1048576 /dev/zero; head -c 65536 /dev/zero >&2",
        ]);
        let out = run_limited(c, b"", Limits::delegate(Duration::from_secs(60))).unwrap();
        assert!(out.ok(), "{}", out.failure());
        assert_eq!((out.stdout.len(), out.stderr.len()), (1 << 20, 64 << 10));
        // One byte more is an error.
        let mut c = Command::new("sh");
        c.args(["-c", "head -c 101 /dev/zero"]);
        let limits = Limits {
            timeout: Duration::from_secs(60),
            stdout: 100,
            stderr: 100,
        };
        let out = run_limited(c, b"", limits).unwrap();
        assert_eq!(out.stopped, Some(Stop::Stdout(100)));
        assert_eq!(out.stdout.len(), 100);
    }

    #[test]
    fn timeout_kills_the_grandchildren_too() {
        let t = Instant::now();
        let (c, f) = with_grandchild("hang", "sleep 300");
        let out = run_limited(c, b"", Limits::delegate(Duration::from_millis(300))).unwrap();
        assert_eq!(out.stopped, Some(Stop::Timeout(Duration::from_millis(300))));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(out.failure().contains("timed out after 0.3 s"));
        assert_gone(pid_in(&f));
    }

    #[test]
    fn a_cleanly_exiting_child_leaves_its_grandchild_alone() {
        let t = Instant::now();
        let (c, f) = with_grandchild("clean", "echo done");
        let out = run_limited(c, b"", Limits::delegate(Duration::from_secs(20))).unwrap();
        assert!(out.ok());
        assert_eq!(out.stdout, "done\n");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let pid = pid_in(&f);
        assert!(!gone(pid), "the grandchild was killed");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    #[test]
    fn own_process_group_together_with_the_netns_pre_exec() {
        let ns = NetNs::open(Path::new("/proc/self/ns/net"))
            .unwrap()
            .unwrap();
        let mut c = ns.command("sh");
        c.args(["-c", "echo $$; cut -d' ' -f5 /proc/$$/stat"]);
        let out = run_tool(c, b"", Duration::from_secs(10)).unwrap();
        assert!(out.ok(), "{}", out.failure());
        let v: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(v.len(), 2, "{}", out.stdout);
        assert_eq!(v[0], v[1], "the child does not lead its own group");
        assert_ne!(v[1], nix::unistd::getpgrp().to_string());
    }
}
