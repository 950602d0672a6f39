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

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Inode number: identifies the namespace.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().map(|m| m.ino()).unwrap_or(0)
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
pub fn run_tool(mut cmd: Command, stdin: &[u8], timeout: Duration) -> std::io::Result<ToolOutput> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut input = child.stdin.take();
    let data = stdin.to_vec();
    // Feed stdin and drain stdout/stderr on helper threads so a large payload
    // or output never deadlocks on a full pipe.
    let writer = std::thread::spawn(move || {
        if let Some(mut w) = input.take() {
            let _ = w.write_all(&data);
        }
    });
    let mut out_pipe = child.stdout.take();
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut s);
        }
        s
    });
    let mut err_pipe = child.stderr.take();
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut s);
        }
        s
    });
    let status = wait_deadline(child, timeout)?;
    let _ = writer.join();
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok(ToolOutput {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Wait for a child with a deadline; SIGKILL it when the deadline passes.
/// Returns the exit code, None when it died by a signal or was killed.
pub fn wait_deadline(
    child: std::process::Child,
    timeout: Duration,
) -> std::io::Result<Option<i32>> {
    let pid = child.id() as libc::pid_t;
    let mut child = child;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let res = match rx.recv_timeout(timeout) {
        Ok(r) => r.map(|st| st.code()),
        Err(_) => {
            // SAFETY: the child is not yet reaped (the waiter has not
            // returned), so the pid still names it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = rx.recv();
            Ok(None)
        }
    };
    let _ = waiter.join();
    res
}
