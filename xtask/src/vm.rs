//! `cargo xtask vm`: run a scenario under a real Debian kernel booted with qemu (TCG).
//!
//! The host kernel cannot run kprobes/fentry, so locktrace's kernel side is tested inside
//! Debian's own 6.1 and 6.12 kernels, booted by `qemu-system-x86_64 -accel tcg,thread=single`
//! (not KVM, not multi-threaded TCG: see /work/shared/ENVIRONMENT.md). Modelled on aya's
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

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};

/// The guest's /init script.
const INIT_SH: &str = include_str!("vm/init.sh");
/// `/bin/lt-spawn`: execs the tracer with SIGINT reset to default (see the file).
const LT_SPAWN_C: &str = include_str!("vm/lt-spawn.c");

/// Kernel series the test bed knows how to fetch.
pub const KERNEL_SERIES: &[&str] = &["6.1", "6.12"];

/// How long the guest waits for `locktrace: attached` on the tracer's stderr.
const ATTACH_TIMEOUT_S: u64 = 60;
/// How long the guest waits for the tracer to exit after SIGINT before SIGKILL.
const STOP_TIMEOUT_S: u64 = 30;
/// Number of console lines printed with an error.
const TAIL_LINES: usize = 60;

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
        "libc-bin", // ldd
        "libbpf-tools", // klockstat, the peer `cargo xtask bench` compares against
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
    let kernel = ensure_kernel(&opts.kernel, &cache)?;
    let t_kernel = t_start.elapsed();
    eprintln!(
        "vm: kernel {} ({}), ready in {:.1}s",
        kernel.release,
        kernel.vmlinuz.display(),
        t_kernel.as_secs_f64()
    );

    let work = WorkDir::new(&cache.parent().unwrap_or(&cache).join("vm-work"))?;
    let staged = work.path().join("initramfs");
    let scen_dst = staged.join("scenario");
    copy_dir(&scenario.dir, &scen_dst)?;
    build_scenario(&scenario, &scen_dst, &kernel)?;
    let t_build = t_start.elapsed();

    stage_initramfs(&staged, opts)?;
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
    let kernel = ensure_kernel(series, &cache_dir())?;
    eprintln!("vm: kernel {} ready", kernel.release);
    Ok(kernel.release)
}

/// Makes scratch names unique across threads of one process.
fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
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

// ---------------------------------------------------------------------------------------------
// Scenario

#[derive(Debug)]
struct Scenario {
    dir: PathBuf,
    has_kmod: bool,
    has_workload: bool,
}

impl Scenario {
    fn load(dir: &Path) -> Result<Self> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("scenario directory {}", dir.display()))?;
        ensure!(
            dir.is_dir(),
            "scenario {} is not a directory",
            dir.display()
        );
        ensure!(
            dir.join("run.sh").is_file(),
            "scenario {} has no run.sh (required; see tests/scenarios/README.md)",
            dir.display()
        );
        let kmod = dir.join("kmod");
        let has_kmod = kmod.is_dir();
        if has_kmod {
            let has_makefile = kmod.join("Makefile").is_file() || kmod.join("Kbuild").is_file();
            ensure!(
                has_makefile,
                "{} has no Makefile or Kbuild (needed to build the module)",
                kmod.display()
            );
            let has_c = fs::read_dir(&kmod)
                .with_context(|| format!("reading {}", kmod.display()))?
                .filter_map(|e| e.ok())
                .any(|e| e.path().extension() == Some(OsStr::new("c")));
            ensure!(has_c, "{} contains no .c file", kmod.display());
        }
        let args = dir.join("tracer-args");
        if args.exists() {
            let text =
                fs::read_to_string(&args).with_context(|| format!("reading {}", args.display()))?;
            ensure!(
                text.trim_end_matches('\n').lines().count() <= 1,
                "{} must hold a single line of arguments",
                args.display()
            );
        }
        Ok(Self {
            has_kmod,
            has_workload: dir.join("workload.c").is_file(),
            dir,
        })
    }
}

/// Builds kmod/*.ko and ./workload inside the staged copy `dst` of the scenario.
fn build_scenario(scenario: &Scenario, dst: &Path, kernel: &Kernel) -> Result<()> {
    if scenario.has_kmod {
        let kmod = dst.join("kmod");
        let out = Command::new("make")
            .arg("-C")
            .arg(&kernel.build_dir)
            .arg(format!("M={}", kmod.display()))
            .arg("modules")
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .output()
            .context("running make for the scenario's kmod/ (is make installed?)")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            out.status.success(),
            "building {}/kmod against {} failed ({}):\n{text}",
            scenario.dir.display(),
            kernel.release,
            out.status
        );
        for line in text.lines().filter(|l| l.contains("warning:")) {
            eprintln!("vm: kmod build: {line}");
        }
        let kos = list_ext(&kmod, "ko")?;
        ensure!(
            !kos.is_empty(),
            "building {} produced no .ko",
            kmod.display()
        );
    }
    if scenario.has_workload {
        let out = Command::new("gcc")
            .args(["-static", "-O2", "-pthread", "-Wall", "-o"])
            .arg(dst.join("workload"))
            .arg(dst.join("workload.c"))
            .output()
            .context("running gcc for workload.c")?;
        ensure!(
            out.status.success(),
            "gcc -static workload.c failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let warnings = String::from_utf8_lossy(&out.stderr);
        if !warnings.trim().is_empty() {
            eprintln!("vm: workload.c: {warnings}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Kernels: resolution and cache

#[derive(Debug)]
struct Kernel {
    /// e.g. "6.1.0-54-amd64", "6.12.117+deb12-amd64"
    release: String,
    vmlinuz: PathBuf,
    /// Headers `build` dir usable as `make -C <build_dir> M=... modules`.
    build_dir: PathBuf,
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOCKTRACE_VM_CACHE") {
        return PathBuf::from(dir);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    workspace.join("target").join("vm-cache")
}

/// Version of `linux-image-<ver>-amd64-unsigned` if it belongs to `series` and is the plain
/// amd64 flavour (not -cloud, -rt). Returns the kernel release ("<ver>-amd64").
fn release_of_package(name: &str, series: &str) -> Option<String> {
    let ver = name
        .strip_prefix("linux-image-")?
        .strip_suffix("-amd64-unsigned")?;
    let ok = match series {
        // 6.1.0-<abi>
        "6.1" => ver
            .strip_prefix("6.1.0-")
            .is_some_and(|abi| !abi.is_empty() && abi.bytes().all(|b| b.is_ascii_digit())),
        // 6.12.<patch>+deb<N>
        "6.12" => ver.strip_prefix("6.12.").is_some_and(|rest| {
            let mut parts = rest.splitn(2, "+deb");
            let patch = parts.next().unwrap_or("");
            let deb = parts.next().unwrap_or("");
            !patch.is_empty()
                && patch.bytes().all(|b| b.is_ascii_digit())
                && !deb.is_empty()
                && deb.bytes().all(|b| b.is_ascii_digit())
        }),
        _ => false,
    };
    ok.then(|| format!("{ver}-amd64"))
}

fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// All releases of `series` in `apt-cache search` output, newest first.
fn releases_from_apt_search(text: &str, series: &str) -> Vec<String> {
    let mut rels: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| release_of_package(name, series))
        .collect();
    rels.sort_by_key(|r| std::cmp::Reverse(version_key(r)));
    rels.dedup();
    rels
}

/// Packages `linux-headers-<release>` depends on that are needed to build modules
/// (`linux-headers-*-common`, `linux-kbuild-*`), from `apt-cache depends` output.
fn header_deps_from_apt_depends(text: &str) -> Vec<String> {
    let mut deps: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches('|');
            l.strip_prefix("Depends:")
        })
        .map(|d| d.trim().to_string())
        .filter(|d| d.starts_with("linux-headers-") || d.starts_with("linux-kbuild-"))
        .collect();
    deps.dedup();
    deps
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

fn apt_search(series: &str) -> Result<Vec<String>> {
    let pattern = format!(
        r"^linux-image-{}\..*-amd64-unsigned$",
        series.replace('.', r"\.")
    );
    let out = Command::new("apt-cache")
        .args(["search", "--names-only", &pattern])
        .output()
        .context("running apt-cache search (is apt installed?)")?;
    ensure!(
        out.status.success(),
        "apt-cache search {pattern} failed: {}",
        out.status
    );
    Ok(releases_from_apt_search(
        &String::from_utf8_lossy(&out.stdout),
        series,
    ))
}

/// `series` is "6.1" or "6.12" (the newest package apt offers), or an exact release such as
/// "6.1.0-57-amd64" (pinned).
fn resolve_release(series: &str, cache: &Path) -> Result<String> {
    if let Some(v) = series.strip_suffix("-amd64") {
        let pkg = format!("linux-image-{v}-amd64-unsigned");
        if KERNEL_SERIES
            .iter()
            .any(|s| release_of_package(&pkg, s).is_some())
        {
            return Ok(series.to_string());
        }
    }
    ensure!(
        KERNEL_SERIES.contains(&series),
        "unknown kernel {series:?}: use a series {KERNEL_SERIES:?} or an exact release such as \
         6.1.0-57-amd64 or 6.12.117+deb12-amd64"
    );
    let mut rels = apt_search(series)?;
    if rels.is_empty() && !APT_UPDATED.swap(true, Ordering::SeqCst) {
        eprintln!("vm: apt offers no linux-image-{series}.*; running apt-get update once");
        let st = Command::new("apt-get")
            .args(["update", "-q"])
            .status()
            .context("running apt-get update")?;
        if st.success() {
            rels = apt_search(series)?;
        } else {
            eprintln!("vm: apt-get update failed ({st}); trying the local kernel cache");
        }
    }
    if let Some(newest) = rels.first() {
        return Ok(newest.clone());
    }
    // Offline fallback: the newest kernel of the series already in the cache.
    let mut cached: Vec<String> = fs::read_dir(cache)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(".ready").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|rel| {
            rel.strip_suffix("-amd64").is_some_and(|v| {
                release_of_package(&format!("linux-image-{v}-amd64-unsigned"), series).is_some()
            })
        })
        .collect();
    cached.sort_by_key(|r| std::cmp::Reverse(version_key(r)));
    cached.into_iter().next().ok_or_else(|| {
        anyhow!(
            "apt offers no linux-image-{series}.*-amd64-unsigned package and none is cached in {}",
            cache.display()
        )
    })
}

fn ensure_kernel(series: &str, cache: &Path) -> Result<Kernel> {
    let release = resolve_release(series, cache)?;
    let dir = cache.join(&release);
    if !dir.join(".ready").exists() {
        fetch_kernel(&release, &dir)
            .with_context(|| format!("fetching kernel {release} into {}", dir.display()))?;
    }
    let kernel = Kernel {
        vmlinuz: dir.join("boot").join(format!("vmlinuz-{release}")),
        build_dir: dir
            .join("root/usr/src")
            .join(format!("linux-headers-{release}")),
        release,
    };
    fix_headers_makefile(&dir.join("root"), &kernel.release)?;
    ensure!(
        kernel.vmlinuz.is_file(),
        "{} missing",
        kernel.vmlinuz.display()
    );
    Ok(kernel)
}

/// Downloads the image and headers of `release` and unpacks them into `dir` (atomically:
/// unpacked next to it, renamed into place).
fn fetch_kernel(release: &str, dir: &Path) -> Result<()> {
    let parent = dir.parent().context("cache dir has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".tmp-{release}-{}", unique_suffix()));
    let _ = fs::remove_dir_all(&tmp);
    let debs = tmp.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;

    let headers = format!("linux-headers-{release}");
    let out = Command::new("apt-cache")
        .args(["depends", &headers])
        .output()
        .context("running apt-cache depends")?;
    ensure!(
        out.status.success(),
        "apt-cache depends {headers} failed: {}",
        out.status
    );
    let mut pkgs = vec![format!("linux-image-{release}-unsigned"), headers.clone()];
    pkgs.extend(header_deps_from_apt_depends(&String::from_utf8_lossy(
        &out.stdout,
    )));
    eprintln!("vm: downloading {}", pkgs.join(" "));
    let st = Command::new("apt-get")
        .arg("download")
        .args(&pkgs)
        .current_dir(&debs)
        .status()
        .context("running apt-get download")?;
    ensure!(
        st.success(),
        "apt-get download {} failed: {st}",
        pkgs.join(" ")
    );

    let root = tmp.join("root");
    fs::create_dir_all(&root)?;
    for deb in list_ext(&debs, "deb")? {
        let name = deb
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("linux-image-") {
            // Only /boot (vmlinuz, config, System.map); the modules are not needed.
            let st = Command::new("sh")
                .args([
                    "-c",
                    r#"dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" ./boot"#,
                    "sh",
                ])
                .arg(&deb)
                .arg(&tmp)
                .status()
                .context("running dpkg-deb | tar")?;
            ensure!(st.success(), "unpacking /boot of {name} failed: {st}");
            fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;
        } else {
            let st = Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(&root)
                .status()
                .context("running dpkg-deb -x")?;
            ensure!(st.success(), "dpkg-deb -x {name} failed: {st}");
        }
    }
    ensure!(
        tmp.join("boot")
            .join(format!("vmlinuz-{release}"))
            .is_file(),
        "the image package has no boot/vmlinuz-{release}"
    );
    ensure!(
        root.join("usr/src")
            .join(&headers)
            .join("Makefile")
            .is_file(),
        "the headers package has no usr/src/{headers}/Makefile"
    );
    // lib/modules/<rel>/build points to /usr/src/...; make it relative to the unpacked root.
    let build_link = root.join("lib/modules").join(release).join("build");
    let _ = fs::remove_file(&build_link);
    if let Some(p) = build_link.parent() {
        fs::create_dir_all(p)?;
    }
    std::os::unix::fs::symlink(format!("../../../usr/src/{headers}"), &build_link)
        .with_context(|| format!("symlinking {}", build_link.display()))?;
    fs::write(tmp.join(".ready"), format!("{}\n", pkgs.join("\n")))?;
    match fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // Another run finished the same kernel first.
        Err(_) if dir.join(".ready").exists() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))
        }
    }
}

/// Debian's `linux-headers-<rel>/Makefile` is `include /usr/src/linux-headers-<x>-common/Makefile`;
/// point it at the unpacked tree (rewritten on every run, so a moved cache still works).
fn fix_headers_makefile(root: &Path, release: &str) -> Result<()> {
    let dir = root
        .join("usr/src")
        .join(format!("linux-headers-{release}"));
    let makefile = dir.join("Makefile");
    let orig = dir.join("Makefile.debian");
    if !orig.exists() {
        fs::copy(&makefile, &orig).with_context(|| format!("saving {}", makefile.display()))?;
    }
    let text = fs::read_to_string(&orig).with_context(|| format!("reading {}", orig.display()))?;
    let root_s = root.to_str().context("cache path is not UTF-8")?;
    let fixed = rewrite_headers_makefile(&text, root_s);
    if fs::read_to_string(&makefile).ok().as_deref() != Some(fixed.as_str()) {
        fs::write(&makefile, fixed).with_context(|| format!("writing {}", makefile.display()))?;
    }
    Ok(())
}

fn rewrite_headers_makefile(text: &str, root: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("include /usr/src/") {
            Some(rest) => format!("include {root}/usr/src/{rest}\n"),
            None => format!("{l}\n"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// initramfs

fn stage_initramfs(staged: &Path, opts: &VmOptions) -> Result<()> {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "lt", "proc", "sys", "dev", "tmp", "out",
    ] {
        fs::create_dir_all(staged.join(d))?;
    }
    let init = staged.join("init");
    fs::write(&init, INIT_SH).context("writing /init")?;
    set_mode(&init, 0o755)?;
    let busybox = Path::new("/bin/busybox");
    ensure!(
        busybox.is_file(),
        "/bin/busybox missing (apt-get install busybox-static)"
    );
    copy_file(busybox, &staged.join("bin/busybox"))?;
    let spawn_c = staged.with_file_name("lt-spawn.c");
    fs::write(&spawn_c, LT_SPAWN_C).context("writing lt-spawn.c")?;
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(staged.join("bin/lt-spawn"))
        .arg(&spawn_c)
        .output()
        .context("running gcc for lt-spawn.c")?;
    ensure!(
        out.status.success(),
        "gcc -static lt-spawn.c failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    copy_file(&opts.locktrace_bin, &staged.join("locktrace"))?;
    set_mode(&staged.join("locktrace"), 0o755)?;
    copy_libs(&opts.locktrace_bin, staged)?;
    // Host programs a scenario asks for (e.g. klockstat for the benchmark), at their own paths.
    let host_binaries = opts.scenario.join("host-binaries");
    if host_binaries.is_file() {
        let list = fs::read_to_string(&host_binaries)
            .with_context(|| format!("reading {}", host_binaries.display()))?;
        for line in list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let bin = Path::new(line);
            ensure!(
                bin.is_absolute() && bin.is_file(),
                "{}: {line} is not an absolute path to an existing file (is its package installed?)",
                host_binaries.display()
            );
            let dst = staged.join(line.trim_start_matches('/'));
            copy_file(bin, &dst)?;
            set_mode(&dst, 0o755)?;
            copy_libs(bin, staged)?;
        }
    }
    // Extra tracer args from the command line; whitespace-separated in the guest.
    if !opts.tracer_args.is_empty() {
        for a in &opts.tracer_args {
            ensure!(
                !a.is_empty()
                    && !a
                        .chars()
                        .any(|c| c.is_whitespace() || "'\"\\$`".contains(c)),
                "tracer argument {a:?}: arguments must not contain whitespace, quotes, $, ` or \\"
            );
        }
        fs::write(staged.join("lt/tracer-args"), opts.tracer_args.join(" "))?;
    }
    Ok(())
}

/// Copies the shared libraries `bin` needs into the initramfs tree at their host paths.
fn copy_libs(bin: &Path, staged: &Path) -> Result<()> {
    for lib in ldd_libs(bin)? {
        let rel = lib.strip_prefix("/").unwrap_or(&lib);
        copy_file(&lib, &staged.join(rel))?;
    }
    Ok(())
}

/// Shared libraries (and the ELF interpreter) `ldd` lists for `bin`; empty for a static binary
/// or a script.
fn ldd_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd (libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable" (static binary, script)
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&text))
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn make_cpio(staged: &Path, initrd: &Path) -> Result<()> {
    // Uncompressed newc: the kernel unpacks it fastest and it needs no compressor.
    let out = fs::File::create(initrd).with_context(|| format!("creating {}", initrd.display()))?;
    let st = Command::new("sh")
        .args([
            "-c",
            "find . -mindepth 1 -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet",
        ])
        .current_dir(staged)
        .stdout(out)
        .status()
        .context("running find | cpio (is cpio installed?)")?;
    ensure!(st.success(), "cpio failed: {st}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Boot and monitor

struct GuestRun {
    console_log: PathBuf,
    console_tail: Vec<String>,
    kernel_release: Option<String>,
    problems: Vec<String>,
    harness_fail: Option<String>,
    done: bool,
    timed_out: bool,
    results_file: PathBuf,
    qemu_stderr: PathBuf,
    guest_time: Duration,
    boot_time: Option<Duration>,
}

fn boot(kernel: &Kernel, initrd: &Path, work: &Path, opts: &VmOptions) -> Result<GuestRun> {
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
                    run.problems.push(format!("{p}: {line}"));
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

    fn into_outcome(self, opts: &VmOptions) -> Result<VmOutcome> {
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

/// A file sent back by the guest: (name, contents).
type ResultFile = (String, Vec<u8>);

/// Parses the ttyS1 stream: `LT-FILE name`, base64 lines, `LT-EOF name`, ..., `LT-RESULTS-END`.
/// Returns the files and whether the end marker arrived.
fn parse_results(text: &str) -> Result<(Vec<ResultFile>, bool)> {
    let mut files = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(name) = line.strip_prefix("LT-FILE ") {
            ensure!(cur.is_none(), "LT-FILE {name} inside another file");
            ensure!(
                !name.is_empty() && !name.contains('/') && name != "." && name != "..",
                "bad result file name {name:?}"
            );
            cur = Some((name.to_string(), String::new()));
        } else if let Some(name) = line.strip_prefix("LT-EOF ") {
            let (n, b64) = cur.take().context("LT-EOF without LT-FILE")?;
            ensure!(n == name, "LT-EOF {name} closes {n}");
            let data = base64_decode(&b64).with_context(|| format!("decoding {n}"))?;
            files.push((n, data));
        } else if line == "LT-RESULTS-END" {
            ensure!(cur.is_none(), "results end inside a file");
            return Ok((files, true));
        } else if let Some((_, b64)) = cur.as_mut() {
            b64.push_str(line.trim());
        }
    }
    Ok((files, false))
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    ensure!(
        clean.len().is_multiple_of(4),
        "base64 length {} is not a multiple of 4",
        clean.len()
    );
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        ensure!(pad <= 2, "bad base64 padding");
        let mut n = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            let v = if k >= 4 - pad {
                0
            } else {
                val(c).ok_or_else(|| anyhow!("bad base64 byte {:?}", c as char))?
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Small fs helpers

/// A per-run scratch directory under target/vm-work, removed when dropped (kept with
/// LOCKTRACE_VM_KEEP=1, for debugging).
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(base: &Path) -> Result<Self> {
        let dir = base.join(unique_suffix());
        let _ = fs::remove_dir_all(&dir); // left over by a crashed run with the same pid
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os("LOCKTRACE_VM_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            eprintln!("vm: work dir kept: {}", self.0.display());
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    }
    fs::copy(src, dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    Ok(())
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if is_build_product(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let ty = fs::metadata(&from).with_context(|| format!("stat {}", from.display()))?;
        if ty.is_dir() {
            copy_dir(&from, &to)?;
        } else {
            copy_file(&from, &to)?;
        }
    }
    Ok(())
}

/// Artifacts of an earlier manual build in the scenario dir (possibly for another kernel):
/// never copied, always rebuilt.
fn is_build_product(name: &str) -> bool {
    const SUFFIXES: &[&str] = &[".ko", ".o", ".mod", ".mod.c", ".cmd", ".symvers", ".order"];
    name == "workload" || name == ".tmp_versions" || SUFFIXES.iter().any(|s| name.ends_with(s))
}

fn list_ext(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension() == Some(OsStr::new(ext)))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APT_SEARCH_61: &str = "\
linux-image-6.1.0-47-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-47-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-47-rt-amd64-unsigned - Linux 6.1 for 64-bit PCs, PREEMPT_RT
linux-image-6.1.0-9-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-54-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-54-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-50-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.12.117+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
";
    const APT_SEARCH_612: &str = "\
linux-image-6.12.107+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.107+deb12-cloud-amd64-unsigned - Linux 6.12 for x86-64 cloud
linux-image-6.12.117+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.117+deb12-rt-amd64-unsigned - Linux 6.12 for 64-bit PCs, PREEMPT_RT
linux-image-6.12.99+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.1.0-54-amd64-unsigned - Linux 6.1 for 64-bit PCs
";

    #[test]
    fn resolves_newest_plain_amd64_of_series() {
        let r = releases_from_apt_search(APT_SEARCH_61, "6.1");
        assert_eq!(
            r,
            [
                "6.1.0-54-amd64",
                "6.1.0-50-amd64",
                "6.1.0-47-amd64",
                "6.1.0-9-amd64"
            ]
        );
        let r = releases_from_apt_search(APT_SEARCH_612, "6.12");
        assert_eq!(
            r,
            [
                "6.12.117+deb12-amd64",
                "6.12.107+deb12-amd64",
                "6.12.99+deb12-amd64"
            ]
        );
        assert!(releases_from_apt_search("", "6.1").is_empty());
        assert!(releases_from_apt_search(APT_SEARCH_61, "5.10").is_empty());
    }

    #[test]
    fn header_deps() {
        let text = "\
linux-headers-6.12.117+deb12-amd64
  Depends: linux-base
  Depends: linux-headers-6.12.117+deb12-common
 |Depends: linux-image-6.12.117+deb12-amd64
  Depends: linux-image-6.12.117+deb12-amd64-unsigned
  Depends: linux-kbuild-6.12.117+deb12
  Depends: gcc-12
";
        assert_eq!(
            header_deps_from_apt_depends(text),
            [
                "linux-headers-6.12.117+deb12-common",
                "linux-kbuild-6.12.117+deb12"
            ]
        );
        let text = "linux-headers-6.1.0-54-amd64\n  Depends: linux-headers-6.1.0-54-common\n  Depends: linux-kbuild-6.1\n  Depends: linux-compiler-gcc-12-x86\n";
        assert_eq!(
            header_deps_from_apt_depends(text),
            ["linux-headers-6.1.0-54-common", "linux-kbuild-6.1"]
        );
    }

    #[test]
    fn headers_makefile_rewrite() {
        assert_eq!(
            rewrite_headers_makefile(
                "include /usr/src/linux-headers-6.1.0-54-common/Makefile\n",
                "/c/root"
            ),
            "include /c/root/usr/src/linux-headers-6.1.0-54-common/Makefile\n"
        );
    }

    #[test]
    fn console_scanning() {
        let bad = [
            ("[   12.345678] Kernel panic - not syncing: Fatal exception", "kernel panic"),
            ("[    3.100000] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI", "Oops"),
            ("[    3.100000] Oops: 0002 [#1] PREEMPT SMP PTI", "Oops"),
            ("[    5.000001] BUG: kernel NULL pointer dereference, address: 0000000000000008", "BUG"),
            ("[    5.000001] BUG: unable to handle page fault for address: ffff", "BUG"),
            ("[   30.5] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [workload:99]", "BUG"),
            ("[    7.000000] kernel BUG at mm/slub.c:123!", "BUG"),
            ("[    8.123456] WARNING: CPU: 1 PID: 77 at kernel/locking/mutex.c:582 __mutex_lock+0x1/0x2", "WARNING"),
            ("[    8.123456] ------------[ cut here ]------------", "WARNING"),
            ("[    9.000000] general protection fault, probably for non-canonical address", "general protection fault"),
            ("[   40.000000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", "RCU stall"),
            // user output and a kernel message sharing one console line
            ("workload: step 1[   12.000001] BUG: scheduling while atomic: x/1/0x2", "BUG"),
            ("lt-init: running run.sh[    3.000001] Oops: 0000 [#1] SMP", "Oops"),
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
    fn printk_stamp() {
        assert_eq!(find_printk_stamp("[    1.234567] x"), Some(14));
        assert_eq!(find_printk_stamp("obj[0] [1.5] y"), Some(12));
        assert_eq!(find_printk_stamp("obj[0] and [1] and [a.b]"), None);
    }

    #[test]
    fn results_roundtrip() {
        let text = "junk before\r\nLT-FILE report.json\r\neyJhIjoxfQ==\r\nLT-EOF report.json\r\nLT-FILE run.status\nMAo=\nLT-EOF run.status\nLT-FILE empty\nLT-EOF empty\nLT-RESULTS-END\n";
        let (files, complete) = parse_results(text).unwrap();
        assert!(complete);
        assert_eq!(
            files,
            vec![
                ("report.json".to_string(), b"{\"a\":1}".to_vec()),
                ("run.status".to_string(), b"0\n".to_vec()),
                ("empty".to_string(), Vec::new()),
            ]
        );
        let (_, complete) = parse_results("LT-FILE a\nYQ==\nLT-EOF a\n").unwrap();
        assert!(!complete);
        assert!(parse_results("LT-FILE ../x\n").is_err());
        assert!(parse_results("LT-FILE a\nYQ=\nLT-EOF a\n").is_err());
    }

    #[test]
    fn build_products_are_skipped() {
        for n in [
            "lt_plain.ko",
            "lt_plain.o",
            "lt_plain.mod",
            "lt_plain.mod.c",
            ".lt_plain.o.cmd",
            "Module.symvers",
            "modules.order",
            "workload",
        ] {
            assert!(is_build_product(n), "{n}");
        }
        for n in [
            "lt_plain.c",
            "lt_plain.h",
            "Makefile",
            "Kbuild",
            "run.sh",
            "workload.c",
            "tracer-args",
        ] {
            assert!(!is_build_product(n), "{n}");
        }
    }

    #[test]
    fn exact_release_is_accepted() {
        let nowhere = Path::new("/nonexistent");
        assert_eq!(
            resolve_release("6.1.0-57-amd64", nowhere).unwrap(),
            "6.1.0-57-amd64"
        );
        assert_eq!(
            resolve_release("6.12.117+deb12-amd64", nowhere).unwrap(),
            "6.12.117+deb12-amd64"
        );
        assert!(resolve_release("5.10", nowhere).is_err());
        assert!(resolve_release("6.1.0-57-cloud-amd64", nowhere).is_err());
    }

    #[test]
    fn base64() {
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(enc).unwrap(), dec.as_bytes());
        }
        assert_eq!(base64_decode("AP8=").unwrap(), [0x00, 0xff]);
    }

    #[test]
    fn ldd_parsing() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn scenario_validation() {
        let base = std::env::temp_dir().join(format!("lt-vm-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).unwrap();
        // no run.sh
        assert!(Scenario::load(&base).is_err());
        fs::write(base.join("run.sh"), "true\n").unwrap();
        let s = Scenario::load(&base).unwrap();
        assert!(!s.has_kmod && !s.has_workload);
        // kmod/ without a Makefile
        fs::create_dir(base.join("kmod")).unwrap();
        fs::write(base.join("kmod/m.c"), "").unwrap();
        assert!(Scenario::load(&base).is_err());
        fs::write(base.join("kmod/Kbuild"), "obj-m := m.o\n").unwrap();
        fs::write(base.join("workload.c"), "int main(){}\n").unwrap();
        let s = Scenario::load(&base).unwrap();
        assert!(s.has_kmod && s.has_workload);
        // tracer-args must be one line
        fs::write(base.join("tracer-args"), "--a\n--b\n").unwrap();
        assert!(Scenario::load(&base).is_err());
        fs::write(base.join("tracer-args"), "--a --b\n").unwrap();
        assert!(Scenario::load(&base).is_ok());
        fs::remove_dir_all(&base).unwrap();
        // the repo's own scenario is valid
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios/plain-mutex");
        let s = Scenario::load(&repo).unwrap();
        assert!(s.has_kmod && s.has_workload);
    }
}
