//! Helpers for the host e2e tests: build a C program, run it under `locktrace trace`.
#![allow(dead_code, reason = "each test binary uses a different subset")]
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

pub fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF programs: run it as root"
    );
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("locktrace-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `tests/programs/NAME.c` (or the given source text) with frame pointers and
/// debug info, so that user stacks unwind and symbolize.
pub fn compile(dir: &Path, name: &str, source: Option<&str>) -> PathBuf {
    let source_path = match source {
        Some(text) => {
            let path = dir.join(format!("{name}.c"));
            std::fs::write(&path, text).unwrap();
            path
        }
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/programs/{name}.c")),
    };
    let binary = dir.join(name);
    let status = Command::new("gcc")
        .args(["-g", "-O1", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(&binary)
        .arg(&source_path)
        .status()
        .expect("gcc must be installed");
    assert!(status.success(), "gcc failed on {}", source_path.display());
    binary
}

/// Reads `child`'s stderr until a line contains `needle`; the rest keeps being collected
/// and is returned by the join handle.
pub fn wait_for_stderr(child: &mut Child, needle: &'static str) -> thread::JoinHandle<String> {
    wait_for_stderr_head(child, needle).0
}

/// Like [`wait_for_stderr`], also returning what was printed up to and with that line.
pub fn wait_for_stderr_head(
    child: &mut Child,
    needle: &'static str,
) -> (thread::JoinHandle<String>, String) {
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut seen = String::new();
        let mut announced = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if !announced && line.contains(needle) {
                announced = true;
                let _ = sender.send(Ok(seen.clone()));
            }
        }
        if !announced {
            let _ = sender.send(Err(seen.clone()));
        }
        seen
    });
    match receiver.recv_timeout(Duration::from_secs(90)) {
        Ok(Ok(head)) => (reader, head),
        Ok(Err(seen)) => panic!("locktrace exited before '{needle}':\n{seen}"),
        Err(_) => panic!("timed out waiting for '{needle}'"),
    }
}

/// A program started with its pid printed on the first stdout line, waiting for a byte.
pub struct Target {
    pub child: Child,
    pub pid: String,
    /// The whole first line (some programs print more than their pid).
    pub first_line: String,
}

impl Target {
    pub fn start(binary: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = line.split_whitespace().next().unwrap().to_string();
        Self {
            child,
            pid,
            first_line: line,
        }
    }

    /// Lets it run (the byte it waits for), without waiting for it.
    pub fn release(&mut self) {
        self.child.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    }

    /// Lets it run and waits for it to exit successfully.
    pub fn go(mut self) {
        self.release();
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Target {
    /// A test that fails while the program hangs (a real deadlock) leaves no process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `locktrace trace ARGS` running in the background until `stop`.
pub struct Tracer {
    child: Child,
    stderr: thread::JoinHandle<String>,
}

pub struct TracerOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Tracer {
    /// `locktrace trace ARGS`, stdout and stderr piped.
    fn spawn(args: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_locktrace"))
            .arg("trace")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn start(args: &[&str]) -> Self {
        let mut child = Self::spawn(args);
        let stderr = wait_for_stderr(&mut child, "locktrace: attached");
        Self { child, stderr }
    }

    /// SIGINT, then collect everything it printed.
    pub fn stop(mut self) -> TracerOutput {
        thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = self.child.wait().unwrap();
        TracerOutput {
            status,
            stdout,
            stderr: self.stderr.join().unwrap(),
        }
    }
}

impl Tracer {
    /// Like `start`, waiting for the metrics address instead and returning what it printed
    /// up to it.
    pub fn start_capturing(args: &[&str]) -> (Self, String) {
        let mut child = Self::spawn(args);
        let (reader, head) = wait_for_stderr_head(&mut child, "locktrace: metrics on");
        (
            Self {
                child,
                stderr: reader,
            },
            head,
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the daemon dies without any exit path of its own running.
    pub fn kill(mut self) -> std::process::ExitStatus {
        self.child.kill().unwrap();
        self.child.wait().unwrap()
    }
}

/// The `(from, to)` class names of every edge of a JSON report.
pub fn edge_pairs<C: FromIterator<(String, String)>>(report: &serde_json::Value) -> C {
    report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// One `GET /metrics` of a trace's `--metrics` server: the whole HTTP response.
pub fn scrape(addr: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: locktrace\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The value of the sample `name` (no labels) in a scrape.
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// Parses a JSON file a run wrote.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}
