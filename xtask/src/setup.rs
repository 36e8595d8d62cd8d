//! `cargo xtask setup`: install, idempotently, everything a fresh machine of this kind lacks
//! to build the eBPF object and run the VM test bed. Each step says what it does.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::{command_output, run_checked};

/// Packages for building the eBPF object and the C test programs.
const BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "gcc",
    "make",
    // `cargo xtask dist` and its checks: man pages rendered by man, the unit verified.
    "man-db",
    "systemd",
    // tracer-user's picture_export test opens `export --format html` in a real browser
    // (headless Chromium) and needs fonts for the screenshot to show the class names.
    "chromium",
    "fonts-dejavu-core",
];
/// bpf-linker pinned to the release that builds with rustc 1.95 against LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn setup() -> Result<()> {
    let mut packages: Vec<&str> = BUILD_PACKAGES.to_vec();
    packages.extend_from_slice(crate::vm::apt_packages());
    install_packages(&packages)?;
    install_rust_src()?;
    install_bpf_linker()?;
    println!("setup: everything needed is installed");
    Ok(())
}

/// Whether the cheap checks say setup has nothing to do (so other commands can skip it).
pub fn is_complete() -> bool {
    let mut packages: Vec<&str> = BUILD_PACKAGES.to_vec();
    packages.extend_from_slice(crate::vm::apt_packages());
    missing_packages(&packages).is_empty() && has_rust_src() && bpf_linker_path().is_some()
}

fn missing_packages<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    packages
        .iter()
        .copied()
        .filter(|package| {
            let status = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", package])
                .output();
            !matches!(
                status,
                Ok(out) if String::from_utf8_lossy(&out.stdout).contains("install ok installed")
            )
        })
        .collect()
}

fn install_packages(packages: &[&str]) -> Result<()> {
    let missing = missing_packages(packages);
    if missing.is_empty() {
        println!("setup: Debian packages present ({})", packages.join(" "));
        return Ok(());
    }
    let line = format!("apt-get install -y {}", missing.join(" "));
    if !crate::is_root() {
        bail!("setup: missing Debian packages; as root run:\n  apt-get update && {line}");
    }
    println!("setup: installing Debian packages: {}", missing.join(" "));
    run_checked(Command::new("apt-get").args(["update", "-qq"]))?;
    run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq"])
            .args(&missing),
    )
    .with_context(|| format!("running {line}"))
}

fn has_rust_src() -> bool {
    command_output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .is_ok_and(|out| out.lines().any(|line| line.starts_with("rust-src")))
}

fn install_rust_src() -> Result<()> {
    if has_rust_src() {
        println!("setup: rust-src for nightly present");
        return Ok(());
    }
    println!("setup: adding rust-src to the nightly toolchain (for -Z build-std=core)");
    run_checked(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

pub fn bpf_linker_path() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))?;
    let installed = cargo_home.join("bin/bpf-linker");
    installed.exists().then_some(installed)
}

fn install_bpf_linker() -> Result<()> {
    if let Some(path) = bpf_linker_path() {
        println!("setup: bpf-linker present ({})", path.display());
        return Ok(());
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    run_checked(
        Command::new("cargo")
            .env("PATH", path)
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"]),
    )
}
