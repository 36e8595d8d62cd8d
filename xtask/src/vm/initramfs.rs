//! The guest's initramfs: busybox, `/init`, `lt-spawn`, `locktrace` and the libraries it
//! needs, the host binaries a scenario asks for, packed as an uncompressed newc cpio.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{ensure, Context as _, Result};

use super::{
    fs_helpers::{copy_file, set_mode},
    VmOptions,
};

/// The guest's /init script.
const INIT_SH: &str = include_str!("init.sh");
/// `/bin/lt-spawn`: execs the tracer with SIGINT reset to default (see the file).
const LT_SPAWN_C: &str = include_str!("lt-spawn.c");

pub(super) fn stage_initramfs(staged: &Path, opts: &VmOptions) -> Result<()> {
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
        for line in list
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let bin = Path::new(line);
            ensure!(
                bin.is_absolute() && bin.is_file(),
                "{}: {line} is not an absolute path to an existing file \
                 (is its package installed?)",
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

pub(super) fn make_cpio(staged: &Path, initrd: &Path) -> Result<()> {
    // Uncompressed newc: the kernel unpacks it fastest and it needs no compressor.
    let out = fs::File::create(initrd).with_context(|| format!("creating {}", initrd.display()))?;
    let st = Command::new("sh")
        .args([
            "-c",
            "find . -mindepth 1 -print0 | LC_ALL=C sort -z \
             | cpio --null -o -H newc --owner=0:0 --quiet",
        ])
        .current_dir(staged)
        .stdout(out)
        .status()
        .context("running find | cpio (is cpio installed?)")?;
    ensure!(st.success(), "cpio failed: {st}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_parsing() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
