//! `cargo xtask dist`: what a fleet installs, under `target/dist/`: the binary, man pages,
//! shell completions, the systemd unit and a Debian package holding all of them. The
//! package's dependencies are read off the binary (its `NEEDED` libraries and the newest
//! glibc symbol version it uses), not written by hand. `check` is the test step that proves
//! each artefact works with the tool that consumes it.
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::{command_output, run_checked, workspace_root};

/// Everything `dist` produced.
pub struct Dist {
    pub dir: PathBuf,
    pub deb: PathBuf,
    pub version: String,
}

/// Where each installed file goes: (path in the package, source under target/dist).
const BASH_COMPLETION: &str = "usr/share/bash-completion/completions/locktrace";
const ZSH_COMPLETION: &str = "usr/share/zsh/vendor-completions/_locktrace";
const FISH_COMPLETION: &str = "usr/share/fish/vendor_completions.d/locktrace.fish";
const UNIT: &str = "usr/lib/systemd/system/locktrace.service";
const BINARY: &str = "usr/bin/locktrace";
const MAN_DIR: &str = "usr/share/man/man1";

pub fn dist(binary: &Path) -> Result<Dist> {
    let root = workspace_root();
    let dir = root.join("target/dist");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let stage = dir.join("deb");
    let version = env!("CARGO_PKG_VERSION").to_string();
    let install = |relative: &str, contents: &[u8], mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        for base in [&stage, &dir.join("files")] {
            let path = base.join(relative);
            fs::create_dir_all(path.parent().unwrap())?;
            fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    };
    install(BINARY, &fs::read(binary)?, 0o755)?;
    for (shell, path) in [
        ("bash", BASH_COMPLETION),
        ("zsh", ZSH_COMPLETION),
        ("fish", FISH_COMPLETION),
    ] {
        let script = command_output(Command::new(binary).args(["completions", shell]))?;
        install(path, script.as_bytes(), 0o644)?;
    }
    let man = dir.join("man");
    run_checked(Command::new(binary).arg("man").arg("--out-dir").arg(&man))?;
    for page in fs::read_dir(&man)? {
        let page = page?.path();
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        // Debian policy: man pages gzip -9n (no timestamp, reproducible).
        let gz = Command::new("gzip")
            .args(["-9n", "-c"])
            .arg(&page)
            .output()
            .context("gzip")?;
        ensure!(gz.status.success(), "gzip {} failed", page.display());
        install(&format!("{MAN_DIR}/{name}.gz"), &gz.stdout, 0o644)?;
    }
    install(
        UNIT,
        &fs::read(root.join("tracer-user/dist/locktrace.service"))?,
        0o644,
    )?;
    let depends = depends(binary)?;
    let installed_kib = dir_size(&stage)? / 1024;
    let control = format!(
        "Package: locktrace\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: locktrace developers <locktrace@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Recommends: linux-image-amd64 (>= 6.1)\n\
         Section: devel\n\
         Priority: optional\n\
         Homepage: https://github.com/locktrace/locktrace\n\
         Description: live lock-order tracer for production Linux kernels (eBPF)\n \
         locktrace finds possible deadlocks the way lockdep does, without a debug\n \
         kernel: eBPF probes on mutexes, rwsems, reclaim and mmu notifiers (and\n \
         pthread locks through uprobes) feed a live lock graph; every cycle is\n \
         reported in lockdep's form with stacks.\n",
        arch = deb_arch()?,
    );
    fs::create_dir_all(stage.join("DEBIAN"))?;
    fs::write(stage.join("DEBIAN/control"), control)?;
    let deb = dir.join(format!("locktrace_{version}_{}.deb", deb_arch()?));
    run_checked(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    fs::remove_dir_all(&stage)?;
    println!("dist: {}", crate::relative_to_workspace(&deb).display());
    Ok(Dist { dir, deb, version })
}

fn deb_arch() -> Result<String> {
    Ok(
        command_output(Command::new("dpkg").arg("--print-architecture"))?
            .trim()
            .to_string(),
    )
}

/// Debian package of each shared library the binary needs; glibc with the newest symbol
/// version it uses.
fn depends(binary: &Path) -> Result<String> {
    let dynamic = command_output(Command::new("readelf").arg("-dW").arg(binary))?;
    let mut packages = BTreeSet::new();
    for line in dynamic.lines().filter(|line| line.contains("(NEEDED)")) {
        let library = line
            .rsplit('[')
            .next()
            .and_then(|rest| rest.strip_suffix(']'))
            .context("unreadable NEEDED line")?;
        let package = match library {
            "libc.so.6"
            | "libm.so.6"
            | "libpthread.so.0"
            | "libdl.so.2"
            | "librt.so.1"
            | "ld-linux-x86-64.so.2" => "libc6",
            "libgcc_s.so.1" => "libgcc-s1",
            "libz.so.1" => "zlib1g",
            "libzstd.so.1" => "libzstd1",
            other => bail!("no Debian package known for {other}: add it to xtask/src/dist.rs"),
        };
        packages.insert(package);
    }
    let symbols = command_output(
        Command::new("readelf")
            .arg("--dyn-syms")
            .arg("-W")
            .arg(binary),
    )?;
    let glibc = symbols
        .split(|c: char| c.is_whitespace() || c == '@')
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|version| {
            let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .context("no GLIBC symbol versions in the binary")?;
    Ok(packages
        .into_iter()
        .map(|package| match package {
            "libc6" => format!("libc6 (>= {}.{})", glibc.0, glibc.1),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", "))
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Each artefact checked by the program that consumes it: the completions parse, every man
/// page renders without a warning, the package lists every file with the fields a package
/// manager needs, the installed binary runs, and the unit passes `systemd-analyze verify`.
pub fn check(dist: &Dist) -> Result<()> {
    let files = dist.dir.join("files");
    run_checked(
        Command::new("bash")
            .arg("-n")
            .arg(files.join(BASH_COMPLETION)),
    )
    .context("bash completion does not parse")?;
    let bash_script = fs::read_to_string(files.join(BASH_COMPLETION))?;
    for word in ["trace", "held", "import-lockdep", "--snapshot-dir"] {
        ensure!(bash_script.contains(word), "bash completion lacks `{word}`");
    }
    for (shell, path) in [("zsh", ZSH_COMPLETION), ("fish", FISH_COMPLETION)] {
        if which::which(shell).is_ok() {
            run_checked(Command::new(shell).arg("-n").arg(files.join(path)))
                .with_context(|| format!("{shell} completion does not parse"))?;
        } else {
            println!("dist: {shell} not installed: its completion script is generated, not parsed");
        }
    }
    let man_dir = files.join(MAN_DIR);
    let mut pages = 0;
    for page in fs::read_dir(&man_dir)? {
        let page = page?.path();
        let output = Command::new("man")
            .args(["--warnings", "-l", "-Tutf8"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .output()
            .context("man")?;
        // man's terminal output embolds by overstriking (`N\x08N`): drop the overstrikes.
        let text =
            String::from_utf8_lossy(&output.stdout)
                .chars()
                .fold(String::new(), |mut text, c| {
                    if c == '\x08' {
                        text.pop();
                    } else {
                        text.push(c);
                    }
                    text
                });
        let warnings = String::from_utf8_lossy(&output.stderr);
        ensure!(
            output.status.success() && warnings.trim().is_empty(),
            "man -l {} failed: {warnings}",
            page.display()
        );
        ensure!(
            text.contains("locktrace") && text.contains("NAME"),
            "{} renders without its NAME section",
            page.display()
        );
        pages += 1;
    }
    ensure!(pages >= 8, "only {pages} man pages");

    let info = command_output(Command::new("dpkg-deb").arg("--info").arg(&dist.deb))?;
    for field in [
        "Package: locktrace".to_string(),
        format!("Version: {}", dist.version),
        "Depends: ".to_string(),
        "libc6 (>= 2.".to_string(),
        "Description: ".to_string(),
    ] {
        ensure!(
            info.contains(&field),
            "package control lacks `{field}`:\n{info}"
        );
    }
    let contents = command_output(Command::new("dpkg-deb").arg("--contents").arg(&dist.deb))?;
    for path in [
        BINARY,
        BASH_COMPLETION,
        ZSH_COMPLETION,
        FISH_COMPLETION,
        UNIT,
        "usr/share/man/man1/locktrace.1.gz",
        "usr/share/man/man1/locktrace-trace.1.gz",
    ] {
        let line = contents
            .lines()
            .find(|line| line.ends_with(&format!("./{path}")))
            .with_context(|| format!("package lacks {path}:\n{contents}"))?;
        ensure!(
            line.contains("root/root"),
            "{path} is not owned by root: {line}"
        );
        let executable = path == BINARY;
        ensure!(
            line.starts_with(if executable {
                "-rwxr-xr-x"
            } else {
                "-rw-r--r--"
            }),
            "{path} has the wrong mode: {line}"
        );
    }

    // The package's own files, extracted, are what is run and verified.
    let extracted = dist.dir.join("extracted");
    let _ = fs::remove_dir_all(&extracted);
    run_checked(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&dist.deb)
            .arg(&extracted),
    )?;
    let installed = extracted.join(BINARY);
    let version = command_output(Command::new(&installed).arg("--version"))?;
    ensure!(
        version.contains(&dist.version),
        "installed binary says `{version}`"
    );
    if which::which("systemd-analyze").is_ok() {
        // verify checks that ExecStart's binary exists: point it at the extracted one.
        let unit = fs::read_to_string(extracted.join(UNIT))?
            .replace("/usr/bin/locktrace", &installed.to_string_lossy());
        let unit_dir = dist.dir.join("unit-check");
        fs::create_dir_all(&unit_dir)?;
        let unit_path = unit_dir.join("locktrace.service");
        fs::write(&unit_path, unit)?;
        let output = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit_path)
            .output()
            .context("systemd-analyze")?;
        let complaints = String::from_utf8_lossy(&output.stderr);
        ensure!(
            output.status.success() && complaints.trim().is_empty(),
            "systemd-analyze verify: {complaints}"
        );
        // The service's own command line must be one locktrace accepts.
        let exec = fs::read_to_string(extracted.join(UNIT))?
            .lines()
            .find_map(|line| line.strip_prefix("ExecStart=/usr/bin/locktrace "))
            .map(str::to_string)
            .context("unit has no ExecStart")?;
        let parsed = Command::new(&installed)
            .args(exec.split_whitespace())
            .arg("--check-args")
            .output()?;
        ensure!(
            parsed.status.success(),
            "the unit's ExecStart is refused: {}",
            String::from_utf8_lossy(&parsed.stderr)
        );
    } else {
        println!("dist: systemd-analyze not installed: the unit is NOT verified");
    }
    Ok(())
}
