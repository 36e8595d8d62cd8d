//! `cargo xtask vm`: run a scenario under a real Debian kernel booted with qemu (TCG).
//!
//! The host kernel cannot run kprobes/fentry, so locktrace's kernel side is tested inside
//! Debian's own 6.1 and 6.12 kernels, booted by `qemu-system-x86_64 -accel tcg,thread=single`
//! (not KVM, not multi-threaded TCG: see ../shared/ENVIRONMENT.md). Modelled on aya's
//! `xtask/src/run.rs`: an initramfs with a small /init, results read back through explicit
//! markers, the guest killed when the kernel panics or hangs.
//!
//! Flow of [`run_vm`]:
//! 1. resolve the newest Debian package of the kernel series (`apt-cache search`), download the
//!    image and headers once into `target/vm-cache/<release>/` (`apt-get download` +
//!    `dpkg-deb -x`, no root install needed);
//! 2. copy the scenario to a work dir, build `kmod/` against that kernel's headers and
//!    `workload.c` with `gcc -static`;
//! 3. build an initramfs: busybox-static, `/init` (vm/init.sh), `/locktrace` and its `ldd`
//!    libraries, `/scenario`;
//! 4. boot; the console (ttyS0) is streamed to `OUT/console.log` and scanned for kernel
//!    panics/Oops/BUG/WARNING/lockups/RCU stalls; the guest sends its result files base64-coded
//!    over a second serial port (ttyS1 -> a host file), so kernel messages never corrupt them.
//!
//! The scenario directory contract is documented in tests/scenarios/README.md.

mod fs_helpers;
mod guest;
mod initramfs;
mod kernels;
mod lockdep_kernel;
mod results;
mod scenario;

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};

use self::{
    fs_helpers::{copy_dir, WorkDir},
    guest::boot,
    initramfs::{make_cpio, stage_initramfs},
    kernels::{cache_dir, ensure_kernel},
    scenario::{build_scenario, Scenario},
};
pub use self::{
    kernels::KERNEL_SERIES,
    lockdep_kernel::{build_time as lockdep_kernel_build_time, LOCKDEP_KERNEL},
};

#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Kernel series: "6.1" (bookworm) or "6.12" (bookworm backports/security).
    pub kernel: String,
    /// Scenario directory (see tests/scenarios/README.md).
    pub scenario: PathBuf,
    /// Output directory; created if missing.
    pub out: PathBuf,
    /// Extra arguments for `locktrace trace` (after the scenario's `tracer-args`).
    pub tracer_args: Vec<String>,
    /// Wall-clock limit for the whole guest run (boot to power-off); qemu is killed after it.
    pub timeout: Duration,
    /// The `locktrace` binary to run in the guest.
    pub locktrace_bin: PathBuf,
}

#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// `uname -r` in the guest, e.g. "6.1.0-54-amd64".
    pub kernel_release: String,
    /// Exit status of the scenario's run.sh (124: still running at the guest deadline).
    pub run_status: i32,
    /// The output directory (report.json, report.txt, graph.dot, console.log, run.status, ...).
    pub out: PathBuf,
}

/// Debian packages the VM test bed needs on the host.
pub fn apt_packages() -> &'static [&'static str] {
    &[
        "qemu-system-x86", // qemu-system-x86_64
        "busybox-static",  // the guest's userland
        "cpio",            // initramfs
        "gcc",             // workload.c (static)
        "gcc-12",          // Debian's kernel headers call gcc-12 explicitly
        "libc6-dev",       // static libc for workload.c
        "make",            // kmod/ (kbuild)
        "bc",              // kbuild
        "dwarves",         // pahole: module BTF for the 6.12 headers (a build error without it)
        "libelf1",         // kbuild's prebuilt tools (objtool, resolve_btfids)
        "libssl3",         // kbuild's sign-file/extract-cert
        "zlib1g",
        "apt",  // apt-get download / apt-cache
        "dpkg", // dpkg-deb
        "tar",
        "libc-bin",     // ldd
        "libbpf-tools", // klockstat, the peer `cargo xtask bench` compares against
        // building the lockdep kernel (`cargo xtask lockdep-compare`)
        "flex",
        "bison",
        "libelf-dev",
        "libssl-dev",
        "openssl",
        "xz-utils",
    ]
}

/// Boots `opts.kernel`, runs the scenario under `locktrace trace`, collects results into
/// `opts.out`. Errors (with the console tail) on kernel panic/Oops/BUG/WARNING/lockup,
/// a hang past `opts.timeout`, or a tracer that does not start.
pub fn run_vm(opts: &VmOptions) -> Result<VmOutcome> {
    let t_start = Instant::now();
    let scenario = Scenario::load(&opts.scenario)?;
    ensure!(
        opts.locktrace_bin.is_file(),
        "locktrace binary {} does not exist (build it first: cargo xtask build)",
        opts.locktrace_bin.display()
    );
    fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating output dir {}", opts.out.display()))?;
    for stale in RESULT_FILES
        .iter()
        .chain(["console.log", "harness.error"].iter())
    {
        let _ = fs::remove_file(opts.out.join(stale));
    }

    let cache = cache_dir();
    let kernel = kernel_for(&opts.kernel, &cache)?;
    let t_kernel = t_start.elapsed();
    eprintln!(
        "vm: kernel {} ({}), ready in {:.1}s",
        kernel.release,
        crate::relative_to_workspace(&kernel.vmlinuz).display(),
        t_kernel.as_secs_f64()
    );

    let work = WorkDir::new(&cache.parent().unwrap_or(&cache).join("vm-work"))?;
    let staged = work.path().join("initramfs");
    let scen_dst = staged.join("scenario");
    copy_dir(&scenario.dir, &scen_dst)?;
    build_scenario(&scenario, &scen_dst, &kernel)?;
    let t_build = t_start.elapsed();

    stage_initramfs(&staged, opts)?;
    if opts.kernel == LOCKDEP_KERNEL {
        stage_lockdep_observer(&staged, &kernel)?;
    }
    let initrd = work.path().join("initrd.cpio");
    make_cpio(&staged, &initrd)?;
    let t_initrd = t_start.elapsed();
    eprintln!(
        "vm: scenario built in {:.1}s, initramfs ({} MiB) in {:.1}s",
        (t_build - t_kernel).as_secs_f64(),
        fs::metadata(&initrd).map(|m| m.len() >> 20).unwrap_or(0),
        (t_initrd - t_build).as_secs_f64()
    );

    let run = boot(&kernel, &initrd, work.path(), opts)?;
    let total = t_start.elapsed();
    eprintln!(
        "vm: guest ran {:.1}s (boot to /init {}), total {:.1}s",
        run.guest_time.as_secs_f64(),
        run.boot_time
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or_else(|| "n/a".into()),
        total.as_secs_f64()
    );
    run.into_outcome(opts)
}

/// Resolves and fetches (once, into the cache) the newest kernel of `series` ("6.1", "6.12")
/// or an exact release; returns its release. Call it before running guests in parallel.
pub fn prepare_kernel(series: &str) -> Result<String> {
    let kernel = kernel_for(series, &cache_dir())?;
    eprintln!("vm: kernel {} ready", kernel.release);
    Ok(kernel.release)
}

/// A Debian kernel, or the lockdep kernel built from the same source.
fn kernel_for(name: &str, cache: &std::path::Path) -> Result<kernels::Kernel> {
    if name == LOCKDEP_KERNEL {
        lockdep_kernel::ensure_lockdep_kernel(cache)
    } else {
        ensure_kernel(name, cache)
    }
}

/// On the lockdep kernel the guest runs no tracer and collects lockdep's state after run.sh,
/// with `lt_lockdep_classes.ko` for the class kinds /proc/lockdep does not print.
fn stage_lockdep_observer(staged: &std::path::Path, kernel: &kernels::Kernel) -> Result<()> {
    const SOURCES: &[(&str, &str)] = &[
        ("Makefile", include_str!("lockdep-classes/Makefile")),
        (
            "lt_lockdep_classes.c",
            include_str!("lockdep-classes/lt_lockdep_classes.c"),
        ),
    ];
    let dir = staged.with_file_name("lockdep-classes");
    fs::create_dir_all(&dir)?;
    for (name, text) in SOURCES {
        fs::write(dir.join(name), text)?;
    }
    scenario::build_module(&dir, kernel)?;
    fs::copy(
        dir.join("lt_lockdep_classes.ko"),
        staged.join("lt/lt_lockdep_classes.ko"),
    )
    .context("staging lt_lockdep_classes.ko")?;
    fs::write(staged.join("lt/lockdep-mode"), "")?;
    Ok(())
}

/// Files the guest may send back; anything else it sends is written too.
const RESULT_FILES: &[&str] = &[
    "report.json",
    "report.txt",
    "graph.dot",
    "run.status",
    "tracer.log",
    "tracer.stdout",
    "tracer.status",
];
