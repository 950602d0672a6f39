//! Network namespaces. multimesh never moves one of its own threads into a
//! pod netns for longer than a scoped closure on a dedicated thread; tools
//! (iptables-restore, nft) are run in the pod netns by entering it in the
//! forked child before exec, so the parent is never affected.

use crate::error::{code, CniError, Result};
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
        // NS_GET_NSTYPE = _IO(0xb7, 0x3)
        const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
        // SAFETY: ioctl on an fd we own, no pointers involved.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if r == libc::CLONE_NEWNET {
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
    pub fn lock(&self) -> Result<NetNsLock<'_>> {
        // SAFETY: flock on an fd this NetNs owns for the guard's lifetime.
        if unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(CniError::new(
                code::NETNS,
                format!(
                    "lock netns {}: {}",
                    self.path.display(),
                    std::io::Error::last_os_error()
                ),
            ));
        }
        Ok(NetNsLock { ns: self })
    }

    /// Build a Command that runs inside this netns.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.file.as_raw_fd();
        // SAFETY: setns is async-signal-safe; runs in the child after fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
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
            // SAFETY: setns on this thread only (threads are tasks on Linux).
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        });
        match h.join() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CniError::new(code::NETNS, format!("setns: {e}"))),
            Err(_) => Err(CniError::new(code::NETNS, "netns worker thread failed")),
        }
    }
}

/// A held `NetNs::lock`.
pub struct NetNsLock<'a> {
    ns: &'a NetNs,
}

impl Drop for NetNsLock<'_> {
    fn drop(&mut self) {
        // SAFETY: flock on the fd the borrowed NetNs still owns.
        unsafe { libc::flock(self.ns.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Output of a tool run with a deadline.
pub struct ToolOutput {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }
    /// Short one-line description of a failure, for error messages.
    pub fn failure(&self) -> String {
        let err = self.stderr.trim();
        let err: String = err.chars().take(400).collect();
        match self.status {
            Some(c) => format!("exit {c}: {err}"),
            None => format!("killed: {err}"),
        }
    }
}

/// Run a command with stdin, capturing output, killing it after `timeout`.
///
/// Single-threaded: stdin is written, then stdout, stderr and a pidfd of the
/// child are polled together until the child exits (or the deadline kills
/// it). A grandchild that keeps the pipes open cannot make us wait: once the
/// child has exited, only what is already buffered is read.
pub fn run_tool(mut cmd: Command, stdin: &[u8], timeout: Duration) -> std::io::Result<ToolOutput> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let deadline = std::time::Instant::now() + timeout;
    let mut child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    // SAFETY: pidfd_open on our own unreaped child.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    // SAFETY: a fresh fd we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut input = child.stdin.take();
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let raw_fds = [
        input.as_ref().map(|x| x.as_raw_fd()),
        out.as_ref().map(|x| x.as_raw_fd()),
        err.as_ref().map(|x| x.as_raw_fd()),
    ];
    for f in raw_fds.into_iter().flatten() {
        // SAFETY: fcntl on pipe fds we own.
        unsafe {
            let fl = libc::fcntl(f, libc::F_GETFL);
            libc::fcntl(f, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
    let mut written = 0;
    if stdin.is_empty() {
        input = None;
    }
    let (mut so, mut se) = (Vec::new(), Vec::new());
    let mut exited = false;
    let mut killed = false;
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
        drain(&mut out, &mut so);
        drain(&mut err, &mut se);
        if exited {
            // Whatever is buffered has been read; only a grandchild could
            // still hold the pipes open, and we do not wait for it.
            break;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            // SAFETY: the child is not reaped yet, so the pid is still it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
            exited = true;
            continue;
        }
        let mut fds = vec![libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let mut watch = |fd: i32, events: i16| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            })
        };
        if let Some(w) = input.as_ref() {
            watch(w.as_raw_fd(), libc::POLLOUT);
        }
        if let Some(r) = out.as_ref() {
            watch(r.as_raw_fd(), libc::POLLIN);
        }
        if let Some(r) = err.as_ref() {
            watch(r.as_raw_fd(), libc::POLLIN);
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: fds is a valid array of pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        } else if fds[0].revents & libc::POLLIN != 0 {
            exited = true;
        }
    }
    let status = child.wait()?;
    Ok(ToolOutput {
        status: if killed { None } else { status.code() },
        stdout: String::from_utf8_lossy(&so).into_owned(),
        stderr: String::from_utf8_lossy(&se).into_owned(),
    })
}

/// Read what is available from a non-blocking pipe; drop it at EOF.
fn drain<R: Read>(pipe: &mut Option<R>, buf: &mut Vec<u8>) {
    let Some(p) = pipe.as_mut() else { return };
    let mut chunk = [0u8; 16384];
    loop {
        match p.read(&mut chunk) {
            Ok(0) => {
                *pipe = None;
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return, // WouldBlock: nothing more for now
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
}
