//! Kernels: the newest Debian package of a series resolved with apt, image and headers
//! downloaded once into `target/vm-cache/<release>/` and unpacked there.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{anyhow, ensure, Context as _, Result};

use super::fs_helpers::{list_ext, unique_suffix};

/// Kernel series the test bed knows how to fetch.
pub const KERNEL_SERIES: &[&str] = &["6.1", "6.12"];

#[derive(Debug)]
pub(super) struct Kernel {
    /// e.g. "6.1.0-54-amd64", "6.12.117+deb12-amd64"
    pub(super) release: String,
    pub(super) vmlinuz: PathBuf,
    /// Headers `build` dir usable as `make -C <build_dir> M=... modules`.
    pub(super) build_dir: PathBuf,
}

pub(super) fn cache_dir() -> PathBuf {
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

pub(super) fn ensure_kernel(series: &str, cache: &Path) -> Result<Kernel> {
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
        let text =
            "linux-headers-6.1.0-54-amd64\n  Depends: linux-headers-6.1.0-54-common\n  Depends: \
                    linux-kbuild-6.1\n  Depends: linux-compiler-gcc-12-x86\n";
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
}
