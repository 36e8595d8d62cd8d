//! `trace -- COMMAND`: the command is forked at once but held before its `execve` until the
//! probes are attached and its pid is in the traced tree, so that none of its lock
//! operations (nor its children's) is missed; then released, waited for through a pidfd,
//! and its exit status passed on as shells do (128 + the signal that killed it).
use std::{
    ffi::{CString, OsString},
    fs::File,
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    },
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::io::{unix::AsyncFd, Interest};

/// A command forked and held before its `execve`, then running, then reaped.
pub struct Command {
    pid: u32,
    display: String,
    /// Write end of the pipe the child waits on: a byte lets it exec, closing it without one
    /// makes it exit unexec'd.
    go: Option<File>,
    /// Read end of the child's close-on-exec pipe: end of file once it exec'd, its `errno`
    /// if `execve` failed.
    exec_error: Option<File>,
    /// Its `waitpid` status, once reaped.
    status: Option<i32>,
}

/// Watches a released command for its exit (its pidfd turns readable) and reaps it.
pub struct ExitWatch {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
}

impl ExitWatch {
    /// Waits until the command has exited, reaps it and returns its `waitpid` status, for
    /// [`Command::reaped`].
    pub async fn wait(&self) -> Result<i32> {
        loop {
            let mut guard = self.pidfd.readable().await?;
            let mut status = 0;
            // SAFETY: our own child; `status` is a valid out-pointer.
            let reaped = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
            if reaped < 0 {
                return Err(std::io::Error::last_os_error()).context("waiting for the command");
            }
            if reaped > 0 {
                return Ok(status);
            }
            guard.clear_ready();
        }
    }
}

/// The program a command name runs, found as `execvp` would (a name with a slash as it is,
/// else the first executable file of that name in `PATH`).
fn resolve(program: &OsString) -> Result<PathBuf> {
    let shown = Path::new(program).display().to_string();
    let executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        let meta = path
            .metadata()
            .map_err(|err| anyhow!("cannot run {shown}: {}", strip_os_error(&err)))?;
        if !meta.is_file() || !executable(&path) {
            bail!("cannot run {shown}: not an executable file");
        }
        return Ok(path);
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|path| executable(path))
        .ok_or_else(|| anyhow!("cannot run {shown}: no such command in PATH"))
}

/// An I/O error's text without Rust's ` (os error N)`.
fn strip_os_error(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn pipe() -> Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors the call writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating a pipe");
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

fn c_string(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).context("a command argument or environment entry contains a NUL byte")
}

impl Command {
    /// Forks `argv` (program first), held before its `execve`. Call before any thread is
    /// started: the child only reads, writes, closes and execs until then.
    pub fn start(argv: &[OsString]) -> Result<Self> {
        let program = argv.first().context("no command given")?;
        let path = resolve(program)?;
        let display = Path::new(program).display().to_string();
        let path_c = c_string(path.as_os_str().as_bytes())?;
        let args: Vec<CString> = argv
            .iter()
            .map(|arg| c_string(arg.as_bytes()))
            .collect::<Result<_>>()?;
        let env: Vec<CString> = std::env::vars_os()
            .map(|(key, value)| {
                let mut entry = key.as_bytes().to_vec();
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                c_string(&entry)
            })
            .collect::<Result<_>>()?;
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        env_ptrs.push(std::ptr::null());
        let (go_read, go_write) = pipe()?;
        let (error_read, error_write) = pipe()?;
        // SAFETY: fork in a process with one thread (see the doc); the child below calls
        // only async-signal-safe functions on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).context("forking the command");
        }
        if pid == 0 {
            // SAFETY: the child: raw descriptors and pointers prepared above.
            unsafe {
                libc::close(go_write.as_raw_fd());
                libc::close(error_read.as_raw_fd());
                let mut byte = 0u8;
                loop {
                    let read = libc::read(go_read.as_raw_fd(), (&raw mut byte).cast(), 1);
                    if read == 1 {
                        break;
                    }
                    if read == 0 || *libc::__errno_location() != libc::EINTR {
                        // The tracer gave up before releasing us.
                        libc::_exit(127);
                    }
                }
                libc::execve(path_c.as_ptr(), arg_ptrs.as_ptr(), env_ptrs.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(
                    error_write.as_raw_fd(),
                    (&raw const errno).cast(),
                    size_of::<i32>(),
                );
                libc::_exit(127);
            }
        }
        drop(go_read);
        drop(error_write);
        Ok(Self {
            pid: pid as u32,
            display,
            go: Some(go_write),
            exec_error: Some(error_read),
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Lets the command exec (call inside the tokio runtime: its exit is watched there).
    /// Fails if `execve` failed.
    pub fn release(&mut self) -> Result<ExitWatch> {
        let pidfd = pidfd_open(self.pid)?;
        // SAFETY: the AsyncFd owns the pidfd, which nothing else closes.
        let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
            .map_err(|err| err.into_parts().1)
            .context("watching the command's pidfd")?;
        let watch = ExitWatch {
            pid: self.pid,
            pidfd,
        };
        let mut go = self.go.take().context("the command was already released")?;
        go.write_all(b"g").context("releasing the command")?;
        drop(go);
        let mut errno = [0u8; 4];
        let mut error = self.exec_error.take().context("no exec pipe")?;
        match error.read(&mut errno) {
            Ok(0) => Ok(watch),
            Ok(_) => {
                self.reap_blocking();
                let err = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
                bail!("cannot run {}: {}", self.display, strip_os_error(&err))
            }
            Err(err) => Err(err).context("reading the command's exec status"),
        }
    }

    /// The command was reaped (by its [`ExitWatch`]) with this `waitpid` status.
    pub fn reaped(&mut self, status: i32) {
        self.status = Some(status);
    }

    /// Its exit status as a shell's `$?` (128 + the signal that killed it), once reaped.
    pub fn exit_code(&self) -> Option<u8> {
        self.status.map(exit_code)
    }

    /// Kills it if it still runs, reaps it and returns its exit status.
    pub fn kill(&mut self) -> u8 {
        if self.status.is_none() {
            self.signal(libc::SIGKILL);
            self.reap_blocking();
        }
        self.status.map_or(1, exit_code)
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    /// Sends `signal` to the command, unless it has exited.
    pub fn signal(&self, signal: i32) {
        if self.status.is_none() {
            // SAFETY: signalling our own unreaped child: its pid cannot have been reused.
            unsafe { libc::kill(self.pid as i32, signal) };
        }
    }

    fn reap_blocking(&mut self) {
        let mut status = 0;
        // SAFETY: our own child; `status` is a valid out-pointer.
        while unsafe { libc::waitpid(self.pid as i32, &mut status, 0) } < 0 {
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return;
            }
        }
        self.status = Some(status);
    }
}

impl Drop for Command {
    /// On every way out of `trace` that did not see the command exit: held, it exits
    /// unexec'd when the pipe closes; running, untraced from now on, it is killed. Reaped
    /// either way.
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        if self.go.take().is_none() {
            // SAFETY: signalling our own unreaped child.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
        self.reap_blocking();
    }
}

/// A shell's `$?` for a `waitpid` status: the exit code, or 128 + the signal.
fn exit_code(status: i32) -> u8 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u8
    } else if libc::WIFSIGNALED(status) {
        (128 + libc::WTERMSIG(status)) as u8
    } else {
        1
    }
}

fn pidfd_open(pid: u32) -> Result<OwnedFd> {
    // SAFETY: a plain syscall; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("pidfd_open of the command");
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether a SIGINT to us came from the terminal, which sent it to the command as well: we
/// are in the foreground process group of the terminal on standard input (the command is
/// in our group).
pub fn interrupt_reached_command() -> bool {
    // SAFETY: plain calls on a descriptor number; a non-terminal gives -1.
    unsafe {
        let foreground = libc::tcgetpgrp(libc::STDIN_FILENO);
        foreground > 0 && foreground == libc::getpgrp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_a_shells() {
        assert_eq!(exit_code(7 << 8), 7);
        // Killed by SIGKILL (9): 137.
        assert_eq!(exit_code(9), 137);
    }

    #[test]
    fn commands_are_found_as_execvp_finds_them() {
        assert!(resolve(&"sh".into()).is_ok_and(|path| path.is_absolute()));
        let missing = resolve(&"/nonexistent".into()).unwrap_err().to_string();
        assert_eq!(
            missing,
            "cannot run /nonexistent: No such file or directory"
        );
        let unknown = resolve(&"no-such-command-anywhere".into()).unwrap_err();
        assert!(unknown.to_string().contains("no such command in PATH"));
        assert!(resolve(&"/etc".into()).is_err());
    }
}
