//! The lockdep kernel: Debian's own `linux-source-6.12` of exactly the production 6.12
//! image's version, configured from that image's config with `CONFIG_PROVE_LOCKING` on, built
//! once into `target/vm-cache/6.12-lockdep/`. It is the oracle `cargo xtask lockdep-compare`
//! measures locktrace against, so everything that decides which locks are taken where (the
//! built-in code, its options, the compiler) stays Debian's; only what cannot matter to the
//! lock graph is trimmed: every `=m` driver (the guest loads none but the scenario's own),
//! debug info and BTF (nothing reads them here).

use std::{fs, path::Path, process::Command, time::Instant};

use anyhow::{ensure, Context as _, Result};

use super::{
    fs_helpers::list_ext,
    kernels::{ensure_kernel, Kernel},
};

/// What `--kernel` calls it.
pub const LOCKDEP_KERNEL: &str = "6.12-lockdep";
/// The production series whose source and config it is built from.
const PRODUCTION_SERIES: &str = "6.12";
/// Appended to the release so that `uname -r` tells the two kernels apart.
const LOCALVERSION: &str = "-lockdep";

/// `scripts/config` arguments applied to Debian's config after `localmodconfig` dropped the
/// modules. `PROVE_LOCKING` selects LOCKDEP, DEBUG_LOCK_ALLOC, DEBUG_MUTEXES, DEBUG_RWSEMS,
/// TRACE_IRQFLAGS; `DEBUG_LOCKDEP` adds the OPS column to /proc/lockdep. Module signing stays
/// (the lockdown LSM selects it) with a key generated at build time; unsigned scenario modules
/// load as they do on Debian's kernel.
const CONFIG_CHANGES: &[&[&str]] = &[
    &["--enable", "PROVE_LOCKING"],
    &["--enable", "DEBUG_LOCKDEP"],
    &["--disable", "LOCK_STAT"],
    &["--disable", "DEBUG_INFO"],
    &["--enable", "DEBUG_INFO_NONE"],
    &["--disable", "DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT"],
    &["--disable", "DEBUG_INFO_BTF"],
    &["--set-str", "SYSTEM_TRUSTED_KEYS", ""],
    &["--set-str", "SYSTEM_REVOCATION_KEYS", ""],
    &["--set-str", "MODULE_SIG_KEY", "certs/signing_key.pem"],
    &["--set-str", "LOCALVERSION", LOCALVERSION],
    &["--disable", "LOCALVERSION_AUTO"],
];

/// Options the comparison depends on; the build fails early if `olddefconfig` dropped one.
const REQUIRED_OPTIONS: &[&str] = &[
    "CONFIG_PROVE_LOCKING=y",
    "CONFIG_LOCKDEP=y",
    "CONFIG_DEBUG_LOCKDEP=y",
    "CONFIG_KPROBES=y", // lt_lockdep_classes finds lockdep's class table through a kprobe
    "CONFIG_MMU_NOTIFIER=y",
    "CONFIG_MODULES=y",
    "CONFIG_SERIAL_8250_CONSOLE=y",
    "CONFIG_BLK_DEV_INITRD=y",
];

/// The lockdep kernel, built first if the cache does not hold it.
pub(super) fn ensure_lockdep_kernel(cache: &Path) -> Result<Kernel> {
    let production = ensure_kernel(PRODUCTION_SERIES, cache)?;
    let version = debian_version(cache, &production.release)?;
    let dir = cache.join(LOCKDEP_KERNEL);
    let ready = dir.join(".ready");
    let built_from = format!("linux-source-{PRODUCTION_SERIES}={version}");
    let stale = fs::read_to_string(&ready)
        .map(|text| text.lines().next() != Some(built_from.as_str()))
        .unwrap_or(true);
    if stale {
        build(&production, &version, &dir)
            .with_context(|| format!("building the lockdep kernel in {}", dir.display()))?;
    }
    let build_dir = dir.join("build");
    let release = fs::read_to_string(build_dir.join("include/config/kernel.release"))
        .context("reading the lockdep kernel's release")?
        .trim()
        .to_string();
    Ok(Kernel {
        vmlinuz: build_dir.join("arch/x86/boot/bzImage"),
        build_dir,
        release,
    })
}

/// The Debian package version of `release`'s headers (`6.12.118-1~deb12u1`), from the file
/// name of the downloaded `.deb`.
fn debian_version(cache: &Path, release: &str) -> Result<String> {
    let debs = cache.join(release).join("debs");
    let prefix = format!("linux-headers-{release}_");
    list_ext(&debs, "deb")?
        .iter()
        .filter_map(|deb| deb.file_name()?.to_str().map(str::to_string))
        .find_map(|name| {
            let rest = name.strip_prefix(&prefix)?;
            rest.split('_').next().map(str::to_string)
        })
        .with_context(|| format!("no {prefix}*.deb in {}", debs.display()))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {what}"))?;
    ensure!(st.success(), "{what} failed: {st}");
    Ok(())
}

fn build(production: &Kernel, version: &str, dir: &Path) -> Result<()> {
    let started = Instant::now();
    // Built in place (the build tree records absolute source paths); `.ready` is written
    // last, so an interrupted build is started over.
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let package = format!("linux-source-{PRODUCTION_SERIES}");
    eprintln!(
        "vm: building the lockdep kernel from {package} {version} (once; about 20 minutes on \
         2 cores): log in {}",
        dir.join("build.log").display()
    );
    run(
        Command::new("apt-get")
            .args(["download", &format!("{package}={version}")])
            .current_dir(dir),
        &format!(
            "apt-get download {package}={version} (the production image's version; \
             is it still offered?)"
        ),
    )?;
    let deb = list_ext(dir, "deb")?
        .into_iter()
        .next()
        .context("apt-get download left no .deb")?;
    let tarball = format!("./usr/src/{package}.tar.xz");
    run(
        Command::new("sh")
            .args([
                "-c",
                r#"dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" "$3""#,
                "sh",
            ])
            .arg(&deb)
            .arg(dir)
            .arg(&tarball),
        "unpacking the source package",
    )?;
    fs::remove_file(&deb)?;
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(dir.join(&tarball))
            .arg("-C")
            .arg(dir),
        "unpacking the kernel source",
    )?;
    fs::remove_file(dir.join(&tarball))?;
    let src_unpacked = dir.join(&package);
    let src = dir.join("source");
    fs::rename(&src_unpacked, &src)?;
    let build_dir = dir.join("build");
    fs::create_dir_all(&build_dir)?;

    let config = production
        .vmlinuz
        .with_file_name(format!("config-{}", production.release));
    fs::copy(&config, build_dir.join(".config"))
        .with_context(|| format!("copying {}", config.display()))?;
    let empty_lsmod = dir.join("no-modules.lsmod");
    fs::write(&empty_lsmod, "Module Size Used by\n")?;
    let log_path = dir.join("build.log");
    let log = fs::File::create(&log_path)?;
    let make = |args: &[&str]| -> Result<()> {
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg(&src)
            .arg(format!("O={}", build_dir.display()))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?);
        run(
            &mut cmd,
            &format!("make {} (see {})", args.join(" "), log_path.display()),
        )
    };
    make(&[
        &format!("LSMOD={}", empty_lsmod.display()),
        "localmodconfig",
    ])?;
    let mut config_cmd = Command::new(src.join("scripts/config"));
    config_cmd.arg("--file").arg(build_dir.join(".config"));
    for change in CONFIG_CHANGES {
        config_cmd.args(*change);
    }
    run(&mut config_cmd, "scripts/config")?;
    make(&["olddefconfig"])?;
    let text = fs::read_to_string(build_dir.join(".config"))?;
    for option in REQUIRED_OPTIONS {
        ensure!(
            text.lines().any(|l| l == *option),
            "the lockdep kernel's config lost {option}"
        );
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get() + 1);
    make(&[&format!("-j{jobs}"), "all"])?;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    eprintln!("vm: lockdep kernel built in {minutes:.1} min");
    fs::write(
        dir.join(".ready"),
        format!(
            "linux-source-{PRODUCTION_SERIES}={version}\nbuilt in {minutes:.1} min with {jobs} jobs\n"
        ),
    )?;
    Ok(())
}

/// "built in N min with J jobs", once the lockdep kernel is built.
pub fn build_time() -> Option<String> {
    let text = fs::read_to_string(
        super::kernels::cache_dir()
            .join(LOCKDEP_KERNEL)
            .join(".ready"),
    )
    .ok()?;
    text.lines().nth(1).map(str::to_string)
}
