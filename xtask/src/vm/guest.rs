//! Boot and monitor: qemu started on the kernel and initramfs, its console scanned line by
//! line for kernel problems and the harness's `lt-init:` lines, the results read back from
//! the second serial port.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::{kernels::Kernel, results::parse_results, VmOptions, VmOutcome};

/// How long the guest waits for `locktrace: attached` on the tracer's stderr.
// Attaching under TCG is the verifier emulated: ~55 s for the fentry set on 6.12 (each
// fentry+fexit pair 2-6 s), against ~1 s on hardware. 60 s left no margin on a loaded host.
const ATTACH_TIMEOUT_S: u64 = 180;
/// How long the guest waits for the tracer to exit after SIGINT before SIGKILL. Detaching
/// ~30 kprobes or fentry trampolines waits for RCU grace periods, which under TCG with two
/// guests on two cores took close to 30 s (a tracer that exits later fails the run).
const STOP_TIMEOUT_S: u64 = 90;
/// Number of console lines printed with an error.
const TAIL_LINES: usize = 60;

pub(super) struct GuestRun {
    console_log: PathBuf,
    console_tail: Vec<String>,
    kernel_release: Option<String>,
    problems: Vec<String>,
    harness_fail: Option<String>,
    done: bool,
    timed_out: bool,
    results_file: PathBuf,
    qemu_stderr: PathBuf,
    pub(super) guest_time: Duration,
    pub(super) boot_time: Option<Duration>,
}

pub(super) fn boot(
    kernel: &Kernel,
    initrd: &Path,
    work: &Path,
    opts: &VmOptions,
) -> Result<GuestRun> {
    let timeout_s = opts.timeout.as_secs().max(30);
    // Guest uptime after which run.sh is abandoned, leaving time to stop the tracer and send
    // the results before the host kills qemu.
    let deadline = if timeout_s >= 120 {
        timeout_s - STOP_TIMEOUT_S - 20
    } else {
        timeout_s / 2
    };
    let attach = std::env::var("LOCKTRACE_VM_ATTACH_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ATTACH_TIMEOUT_S)
        .min(deadline);
    let append = format!(
        "console=ttyS0 loglevel=5 panic=-1 oops=panic softlockup_panic=1 rdinit=/init \
         lt.deadline={deadline} lt.attach_timeout={attach} lt.stop_timeout={STOP_TIMEOUT_S}"
    );
    let lockdep_kernel = opts.kernel == super::LOCKDEP_KERNEL;
    let results_file = work.join("results.ttyS1");
    let qemu_stderr = work.join("qemu.stderr");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-m",
        "1024",
        "-smp",
        "2",
    ])
    .args(["-nographic", "-no-reboot", "-nic", "none"])
    .args(["-serial", "mon:stdio"])
    .arg("-serial")
    .arg(format!("file:{}", results_file.display()))
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .arg("-append")
    .arg(&append)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(
        fs::File::create(&qemu_stderr)
            .with_context(|| format!("creating {}", qemu_stderr.display()))?,
    );
    eprintln!(
        "vm: booting {} (timeout {timeout_s}s): {cmd:?}",
        kernel.release
    );
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .context("spawning qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let console_log = opts.out.join("console.log");
    let mut log = std::io::BufWriter::new(
        fs::File::create(&console_log)
            .with_context(|| format!("creating {}", console_log.display()))?,
    );
    let verbose = std::env::var_os("LOCKTRACE_VM_QUIET").is_none();
    let mut run = GuestRun {
        console_log: console_log.clone(),
        console_tail: Vec::new(),
        kernel_release: None,
        problems: Vec::new(),
        harness_fail: None,
        done: false,
        timed_out: false,
        results_file,
        qemu_stderr,
        guest_time: Duration::ZERO,
        boot_time: None,
    };
    let hard_deadline = started + Duration::from_secs(timeout_s);
    let mut done_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // After "lt-init: done" the guest powers off at once; give it 20 s.
        let limit = match done_at {
            Some(t) => (t + Duration::from_secs(20)).min(hard_deadline),
            None => hard_deadline,
        };
        if now >= limit {
            if done_at.is_none() {
                run.timed_out = true;
            }
            let _ = child.kill();
            break;
        }
        match rx.recv_timeout(limit - now) {
            Ok(line) => {
                writeln!(log, "{line}").context("writing console.log")?;
                if verbose {
                    eprintln!("{line}");
                }
                if let Some(p) = kernel_problem(&line) {
                    // On the lockdep kernel lockdep's reports are what is measured.
                    if !(lockdep_kernel && is_lockdep_report(&line)) {
                        run.problems.push(format!("{p}: {line}"));
                    }
                }
                if let Some(rest) = line.strip_prefix("lt-init: ") {
                    if let Some(rel) = rest.strip_prefix("uname-r ") {
                        run.kernel_release = Some(rel.trim().to_string());
                        run.boot_time = Some(started.elapsed());
                    } else if let Some(why) = rest.strip_prefix("FAIL ") {
                        run.harness_fail = Some(why.to_string());
                    } else if rest == "done" {
                        run.done = true;
                        done_at = Some(Instant::now());
                    }
                }
                run.console_tail.push(line);
                if run.console_tail.len() > 4 * TAIL_LINES {
                    run.console_tail
                        .drain(..run.console_tail.len() - TAIL_LINES);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break, // qemu exited
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    log.flush().context("writing console.log")?;
    run.guest_time = started.elapsed();
    Ok(run)
}

impl GuestRun {
    fn tail(&self) -> String {
        let start = self.console_tail.len().saturating_sub(TAIL_LINES);
        let mut s = String::new();
        for l in &self.console_tail[start..] {
            let _ = writeln!(s, "    {l}");
        }
        if let Ok(err) = fs::read_to_string(&self.qemu_stderr) {
            if !err.trim().is_empty() {
                let _ = writeln!(s, "qemu stderr:\n{err}");
            }
        }
        s
    }

    pub(super) fn into_outcome(self, opts: &VmOptions) -> Result<VmOutcome> {
        // Save whatever results arrived, even on failure: they help the diagnosis.
        let mut results_complete = false;
        let mut files = Vec::new();
        match fs::read(&self.results_file) {
            Ok(bytes) => match parse_results(&String::from_utf8_lossy(&bytes)) {
                Ok((f, complete)) => {
                    files = f;
                    results_complete = complete;
                }
                Err(e) => eprintln!("vm: could not decode the guest's results: {e:#}"),
            },
            Err(e) => eprintln!("vm: no results from the guest: {e}"),
        }
        for (name, data) in &files {
            let path = opts.out.join(name);
            fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        }
        let rel = self.kernel_release.clone().unwrap_or_else(|| "?".into());
        let ctx = |what: String| {
            format!(
                "{what} (kernel {rel}, scenario {}); full console: {}; last console lines:\n{}",
                opts.scenario.display(),
                self.console_log.display(),
                self.tail()
            )
        };
        if !self.problems.is_empty() {
            let shown = &self.problems[..self.problems.len().min(10)];
            bail!(ctx(format!(
                "the guest kernel reported a problem ({} line(s)):\n  {}\n",
                self.problems.len(),
                shown.join("\n  ")
            )));
        }
        if self.timed_out {
            bail!(ctx(format!(
                "the guest hung: no power-off within {}s; qemu killed",
                opts.timeout.as_secs()
            )));
        }
        if let Some(why) = &self.harness_fail {
            bail!(ctx(format!("the guest harness failed: {why}")));
        }
        if !self.done {
            bail!(ctx("the guest stopped before the harness finished".into()));
        }
        if !results_complete {
            bail!(ctx("the guest's results (ttyS1) are incomplete".into()));
        }
        let kernel_release = self
            .kernel_release
            .clone()
            .ok_or_else(|| anyhow!(ctx("the guest never printed its kernel release".into())))?;
        let status_text = fs::read_to_string(opts.out.join("run.status"))
            .map_err(|e| anyhow!(ctx(format!("run.status missing from the results: {e}"))))?;
        let run_status: i32 = status_text
            .trim()
            .parse()
            .with_context(|| format!("run.status {status_text:?}"))?;
        match fs::read_to_string(opts.out.join("tracer.status")) {
            Ok(s) if s.trim() == "0" => {}
            Ok(s) => eprintln!("vm: WARNING: tracer did not exit cleanly: {}", s.trim()),
            Err(_) if opts.kernel == super::LOCKDEP_KERNEL => {}
            Err(_) => eprintln!("vm: WARNING: no tracer.status in the results"),
        }
        eprintln!("vm: kernel {kernel_release}: run.sh exit status {run_status}");
        Ok(VmOutcome {
            kernel_release,
            run_status,
            out: opts.out.clone(),
        })
    }
}

/// Classifies a console line as a kernel problem (panic, Oops, BUG, WARNING, lockup, RCU
/// stall). Hung-task reports ("blocked for more than N seconds") are not problems: deadlock
/// scenarios cause them on purpose.
fn kernel_problem(line: &str) -> Option<&'static str> {
    // Kernel messages carry a "[ seconds.micros] " stamp (Debian: CONFIG_PRINTK_TIME=y); lines
    // without one are user-space output (run.sh, the tracer) and never a kernel problem. User
    // output may share a line with a kernel message, so look for the stamp anywhere.
    let msg = &line[find_printk_stamp(line)?..];
    let msg = msg.trim_start();
    const PATTERNS: &[(&str, &str, bool)] = &[
        // (needle, kind, must be at start of message)
        ("Kernel panic - not syncing", "kernel panic", false),
        ("Oops", "Oops", true),
        ("BUG: ", "BUG", false),
        ("kernel BUG at", "BUG", false),
        ("WARNING: ", "WARNING", true),
        ("------------[ cut here ]------------", "WARNING", true),
        ("general protection fault", "general protection fault", true),
        ("soft lockup", "soft lockup", false),
        ("hard LOCKUP", "hard lockup", false),
        ("detected stalls on CPUs", "RCU stall", false),
        ("self-detected stall on CPU", "RCU stall", false),
        ("Unable to handle kernel", "kernel fault", false),
    ];
    PATTERNS.iter().find_map(|(needle, kind, at_start)| {
        let hit = if *at_start {
            msg.starts_with(needle)
        } else {
            msg.contains(needle)
        };
        hit.then_some(*kind)
    })
}

/// The header of a lockdep (or RCU-lockdep) report: `WARNING: possible circular locking
/// dependency detected`, `WARNING: inconsistent lock state`, ... `WARN()` splats, which name a
/// CPU (`WARNING: CPU: 1 PID: 7 at ...`) or a place (`WARNING: at ...`), are not.
fn is_lockdep_report(line: &str) -> bool {
    let Some(stamp) = find_printk_stamp(line) else {
        return false;
    };
    line[stamp..]
        .trim_start()
        .strip_prefix("WARNING: ")
        .is_some_and(|rest| !rest.starts_with("CPU: ") && !rest.starts_with("at "))
}

/// Byte index just after the first "[ 12.345678] " printk stamp in `line`.
fn find_printk_stamp(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let mut i = 0;
    while let Some(off) = line[i..].find('[') {
        let start = i + off;
        let mut j = start + 1;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        let d0 = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > d0 && j < b.len() && b[j] == b'.' {
            j += 1;
            let f0 = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j > f0 && j < b.len() && b[j] == b']' {
                return Some(j + 1);
            }
        }
        i = start + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_scanning() {
        let bad = [
            (
                "[   12.345678] Kernel panic - not syncing: Fatal exception",
                "kernel panic",
            ),
            (
                "[    3.100000] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI",
                "Oops",
            ),
            ("[    3.100000] Oops: 0002 [#1] PREEMPT SMP PTI", "Oops"),
            (
                "[    5.000001] BUG: kernel NULL pointer dereference, address: 0000000000000008",
                "BUG",
            ),
            (
                "[    5.000001] BUG: unable to handle page fault for address: ffff",
                "BUG",
            ),
            (
                "[   30.5] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [workload:99]",
                "BUG",
            ),
            ("[    7.000000] kernel BUG at mm/slub.c:123!", "BUG"),
            (
                "[    8.123456] WARNING: CPU: 1 PID: 77 at kernel/locking/mutex.c:582 \
                 __mutex_lock+0x1/0x2",
                "WARNING",
            ),
            (
                "[    8.123456] ------------[ cut here ]------------",
                "WARNING",
            ),
            (
                "[    9.000000] general protection fault, probably for non-canonical address",
                "general protection fault",
            ),
            (
                "[   40.000000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
                "RCU stall",
            ),
            // user output and a kernel message sharing one console line
            (
                "workload: step 1[   12.000001] BUG: scheduling while atomic: x/1/0x2",
                "BUG",
            ),
            (
                "lt-init: running run.sh[    3.000001] Oops: 0000 [#1] SMP",
                "Oops",
            ),
        ];
        for (line, kind) in bad {
            assert_eq!(kernel_problem(line), Some(kind), "{line}");
        }
        let good = [
            "[    0.000000] Linux version 6.1.0-54-amd64 (debian-kernel@lists.debian.org)",
            "[  123.000000] INFO: task workload:95 blocked for more than 120 seconds.",
            "[    1.000000] Run /init as init process",
            "lt-init: FAIL tracer exited (status 1) before printing 'locktrace: attached'",
            "lt-init: uname-r 6.12.117+deb12-amd64",
            "[    2.000000] e1000: Intel(R) PRO/1000 Network Driver",
            "locktrace: attached",
            "workload: 3 x (AB on obj[0], BA on obj[1]) done",
            // user-space output without a printk stamp
            "locktrace: BUG: lost 3 events",
            "WARNING: something in run.sh",
        ];
        for line in good {
            assert_eq!(kernel_problem(line), None, "{line}");
        }
    }

    #[test]
    fn lockdep_reports_are_told_from_warn_splats() {
        for header in [
            "[   12.5] WARNING: possible circular locking dependency detected",
            "[   12.5] WARNING: possible recursive locking detected",
            "[   12.5] WARNING: inconsistent lock state",
            "[   12.5] WARNING: suspicious RCU usage",
        ] {
            assert!(is_lockdep_report(header), "{header}");
            assert_eq!(kernel_problem(header), Some("WARNING"), "{header}");
        }
        for splat in [
            "[    8.1] WARNING: CPU: 1 PID: 77 at kernel/locking/mutex.c:582 __mutex_lock+0x1/0x2",
            "[    8.1] WARNING: at kernel/foo.c:10 bar()",
            "[    8.1] BUG: kernel NULL pointer dereference, address: 0000000000000008",
            "WARNING: possible circular locking dependency detected",
        ] {
            assert!(!is_lockdep_report(splat), "{splat}");
        }
    }

    #[test]
    fn printk_stamp() {
        assert_eq!(find_printk_stamp("[    1.234567] x"), Some(14));
        assert_eq!(find_printk_stamp("obj[0] [1.5] y"), Some(12));
        assert_eq!(find_printk_stamp("obj[0] and [1] and [a.b]"), None);
    }
}
