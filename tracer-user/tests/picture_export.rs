//! Pictures of findings, drawn in-process: `export --cycle ID --format svg|html` and the
//! whole graph as `--format svg` without Graphviz. The SVG and the HTML parse as XML and
//! carry every class of the cycle (names that need escaping), the page carries the report's
//! lockdep-style text and each edge's stacks, and a real browser (headless Chromium)
//! renders the page: a non-blank screenshot with the red cycle edges, every class name in
//! the DOM.
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::scratch_dir;

fn locktrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(output: Output) -> Output {
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    output
}

/// Frames in the fixture, in lockdep syntax (which is also how the page prints them).
const STACK_A: &str = "nvkm_uvmm_mthd+0x4d5/0xbe0 [nouveau]";
const STACK_B: &str = "nouveau_svmm_bind+0x21/0x80 [nouveau]";
const STACK_C: &str = "drm_ioctl_kernel<T>+0x9a/0x100";
const STACK_D: &str = "mmap_region&co+0x10/0x20";

/// A three-class cycle whose names need escaping in XML, and one edge off the cycle.
fn fixture(dir: &Path) -> (PathBuf, serde_json::Value, String) {
    let classes = ["&vmm->mutex", "&svmm->mutex", "&mm->mmap_lock<'r'>"];
    let mut trace = String::new();
    let new_stacks = [STACK_A, STACK_B, STACK_C];
    let held_stacks = [STACK_D, STACK_C, STACK_B];
    for i in 0..classes.len() {
        let line = serde_json::json!({
            "type": "dep",
            "held": classes[i],
            "new": classes[(i + 1) % classes.len()],
            "comm": "picture", "pid": 7, "tid": 7 + i,
            "new_stack": [new_stacks[i], STACK_D],
            "held_stack": [held_stacks[i]],
        });
        trace.push_str(&format!("{line}\n"));
    }
    trace.push_str("{\"type\":\"dep\",\"held\":\"&vmm->mutex\",\"new\":\"off_cycle_lock\"}\n");
    let trace_path = dir.join("trace.jsonl");
    std::fs::write(&trace_path, trace).unwrap();
    let snapshot = dir.join("snap.json");
    let report = ok(locktrace(&[
        "report",
        trace_path.to_str().unwrap(),
        "--report-json",
        snapshot.to_str().unwrap(),
    ]));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&snapshot).unwrap()).unwrap();
    assert_eq!(json["cycles"].as_array().unwrap().len(), 1, "{json}");
    (snapshot, json, String::from_utf8(report.stdout).unwrap())
}

fn cycle_of(json: &serde_json::Value) -> (String, Vec<String>) {
    let cycle = &json["cycles"][0];
    let classes = cycle["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (cycle["id"].as_str().unwrap().to_string(), classes)
}

fn parse(text: &str) -> roxmltree::Document<'_> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(text, options)
        .unwrap_or_else(|e| panic!("not well-formed: {e}\n{text}"))
}

/// The text content of every `<text>` element.
fn svg_texts(doc: &roxmltree::Document) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.tag_name().name() == "text")
        .map(text_of)
        .collect()
}

fn text_of(node: roxmltree::Node) -> String {
    node.descendants()
        .filter(|d| d.is_text())
        .map(|d| d.text().unwrap())
        .collect()
}

fn export(snapshot: &Path, extra: &[&str], out: &Path) -> String {
    let mut args = vec!["export", snapshot.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", out.to_str().unwrap()]);
    ok(locktrace(&args));
    std::fs::read_to_string(out).unwrap()
}

#[test]
fn cycle_svg_and_html_parse_and_carry_the_finding() {
    let dir = scratch_dir("picture-cycle");
    let (snapshot, json, report_text) = fixture(&dir);
    let (id, classes) = cycle_of(&json);

    let svg = export(
        &snapshot,
        &["--cycle", &id, "--format", "svg"],
        &dir.join("cycle.svg"),
    );
    let doc = parse(&svg);
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts = svg_texts(&doc);
    for class in &classes {
        assert!(texts.contains(class), "{class} is no <text>: {texts:?}");
    }
    assert!(
        !texts.iter().any(|t| t == "off_cycle_lock"),
        "the cycle's picture shows only the cycle"
    );

    let html = export(
        &snapshot,
        &["--cycle", &id, "--format", "html"],
        &dir.join("cycle.html"),
    );
    let doc = parse(&html);
    assert_eq!(doc.root_element().tag_name().name(), "html");
    let svg = doc
        .descendants()
        .find(|n| n.tag_name().name() == "svg")
        .expect("inline <svg>");
    let texts: Vec<String> = svg
        .descendants()
        .filter(|n| n.tag_name().name() == "text")
        .map(text_of)
        .collect();
    for class in &classes {
        assert!(texts.contains(class), "{class} not drawn: {texts:?}");
    }
    // The lockdep-style text is the report's own, as `locktrace report` prints it.
    let pre = doc
        .descendants()
        .find(|n| n.tag_name().name() == "pre" && n.attribute("class") == Some("report"))
        .expect("report <pre>");
    let splat = text_of(pre);
    assert!(splat.contains("possible circular locking dependency detected"));
    assert!(splat.contains(&id));
    assert!(
        report_text.contains(&splat),
        "not the report's text:\n{splat}"
    );
    // Each edge's stacks, in a section of its own.
    let page = text_of(doc.root_element());
    for frame in [STACK_A, STACK_B, STACK_C, STACK_D] {
        assert!(page.contains(frame), "stack frame {frame} missing");
    }
    let sections = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "section")
        .count();
    assert_eq!(sections, classes.len(), "one section per edge");
    // Self-contained: nothing to load.
    for node in doc.descendants().filter(|n| n.is_element()) {
        let name = node.tag_name().name();
        assert!(
            !matches!(name, "script" | "link" | "img" | "iframe"),
            "{name}"
        );
        assert!(node.attribute("src").is_none());
        assert!(node.attribute("href").is_none_or(|h| h.starts_with('#')));
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_cycle_id_lists_the_valid_ones() {
    let dir = scratch_dir("picture-bad-id");
    let (snapshot, json, _) = fixture(&dir);
    let (id, _) = cycle_of(&json);
    let snap = snapshot.to_str().unwrap();
    for args in [
        vec![
            "export",
            snap,
            "--cycle",
            "cyc-0000000000000000",
            "--format",
            "svg",
        ],
        vec!["export", snap, "--format", "html"],
    ] {
        let out = locktrace(&args);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&id),
            "{args:?}: valid ids not listed: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn whole_graph_svg_needs_no_graphviz() {
    let dir = scratch_dir("picture-whole");
    let (snapshot, json, _) = fixture(&dir);
    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .args(["export", snapshot.to_str().unwrap(), "--format", "svg"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let out = ok(out);
    let svg = String::from_utf8(out.stdout).unwrap();
    let texts = svg_texts(&parse(&svg));
    for class in json["classes"].as_array().unwrap() {
        let name = class["name"].as_str().unwrap();
        assert!(texts.iter().any(|t| t == name), "{name}: {texts:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn find_chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium is not installed; this test renders the page in a real browser: \
                 run `cargo xtask setup` (it installs Debian's chromium)"
            )
        })
}

/// Runs headless Chromium on `page` with `args`, killed after a minute.
fn chromium(dir: &Path, args: &[&str], page: &Path) -> Output {
    let child = Command::new(find_chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium-profile").display()
        ))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting chromium");
    let pid = child.id();
    let (done, waiting) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(output) = waiting.recv_timeout(Duration::from_millis(200)) {
            return output.unwrap();
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the child we started, still unreaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("chromium {args:?} did not finish within 60 s");
        }
    }
}

#[test]
fn the_page_renders_in_headless_chromium() {
    let dir = scratch_dir("picture-browser");
    let (snapshot, json, _) = fixture(&dir);
    let (id, classes) = cycle_of(&json);
    let page = dir.join("cycle.html");
    export(&snapshot, &["--cycle", &id, "--format", "html"], &page);

    // The DOM as the browser built it: an <svg> with every class name in it.
    let dom = chromium(&dir, &["--dump-dom"], &page);
    assert!(dom.status.success(), "{dom:?}");
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let start = dom.find("<svg").expect("no <svg> in the rendered DOM");
    let end = dom[start..].find("</svg>").expect("unclosed <svg>") + start;
    let drawn = &dom[start..end];
    for class in &classes {
        // Serialised DOM text escapes &, < and > (not quotes).
        let escaped = class
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(
            drawn.contains(&escaped),
            "{class} not in the rendered <svg>"
        );
        assert!(dom.contains(&escaped));
    }

    // The screenshot: not blank, and the red cycle edges were painted.
    let shot = dir.join("shot.png");
    let run = chromium(
        &dir,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,900",
        ],
        &page,
    );
    assert!(run.status.success() && shot.exists(), "{run:?}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let not_white = pixels
        .iter()
        .filter(|p| p[0] < 240 || p[1] < 240 || p[2] < 240)
        .count();
    let red = pixels
        .iter()
        // Pure red: the edges' `red` strokes, not the page's dark red state line.
        .filter(|p| p[0] > 230 && p[1] < 40 && p[2] < 40)
        .count();
    let total = pixels.len();
    assert!(
        not_white > total / 200,
        "blank screenshot: {not_white} of {total} pixels inked"
    );
    assert!(
        red > 300,
        "the cycle's red edges were not painted: {red} red pixels"
    );
    std::fs::remove_dir_all(&dir).ok();
}
