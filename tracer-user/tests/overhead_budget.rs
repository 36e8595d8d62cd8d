//! `--max-overhead`: a tiny budget on a busy lock loop sheds, step by step, until the
//! pthread family is off, and says so in the log, the status line, the metrics and the
//! report; when the load stops, full coverage comes back, and an inversion made afterwards
//! is found.
mod common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::{assert_root, compile, metric_value, read_json, scrape, scratch_dir, Target};

/// Waits for a stderr line containing `needle`, returning it; everything seen goes to `log`.
fn wait_line(lines: &mpsc::Receiver<String>, log: &mut String, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => panic!("no line with '{needle}' in:\n{log}"),
        }
    }
}

fn metric(body: &str, name: &str) -> f64 {
    metric_value(body, name).unwrap_or_else(|| panic!("no {name} in:\n{body}"))
}

#[test]
fn a_tiny_budget_sheds_visibly_and_coverage_returns_when_the_load_stops() {
    assert_root();
    let dir = scratch_dir("budget");
    let binary = compile(&dir, "budget_phases", None);
    let mut target = Target::start(&binary, &[]);
    let report = dir.join("report.json");
    let mut tracer = Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .args([
            "trace",
            "--user",
            "--pid",
            &target.pid,
            "--max-overhead",
            "0.01",
        ])
        .args(["--metrics", "127.0.0.1:0", "--report-json"])
        .arg(&report)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = tracer.stderr.take().unwrap();
    let (sender, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    wait_line(&lines, &mut log, "overhead budget: 0.01% of busy CPU time");
    wait_line(&lines, &mut log, "locktrace: attached");
    let addr = wait_line(&lines, &mut log, "metrics on http://")
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics")
        .to_string();
    assert_eq!(metric(&scrape(&addr), "locktrace_shed_steps"), 0.0, "{log}");

    target.release();
    // Sampling first, then the family: the order is the documented one.
    let first = wait_line(&lines, &mut log, "shedding:");
    assert!(first.contains("sampled 1 in 4"), "{log}");
    wait_line(
        &lines,
        &mut log,
        "shedding: pthread_mutex acquires not traced",
    );
    // At once (a restore waits two seconds at least): every step is in force.
    let busy = scrape(&addr);
    assert!(metric(&busy, "locktrace_shed_steps") >= 4.0, "{busy}");
    assert!(
        metric(&busy, "locktrace_overhead_budget_percent") == 0.01,
        "{busy}"
    );
    // Its acquire hooks go at once, its release hooks once nothing of it is held.
    let acquires = wait_line(&lines, &mut log, "pthread_mutex Acquire hooks");
    assert!(acquires.contains("detached"), "{log}");
    let releases = wait_line(&lines, &mut log, "pthread_mutex Release hooks");
    assert!(releases.contains("detached"), "{log}");
    // The status line says what is shed (the sampling stays while the family is probed).
    let status = wait_line(&lines, &mut log, "; SHED for ");
    assert!(status.contains("quiet sites sampled 1/64"), "{status}");
    // The family's acquires stop being seen at all (its hooks go): the time it was off is
    // what the loss counters say.
    let later = scrape(&addr);
    assert!(
        metric(&later, "locktrace_budget_family_off_ms_total") > 0.0,
        "{later}"
    );

    // The load stops: everything is given back.
    target
        .child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"i")
        .unwrap();
    wait_line(&lines, &mut log, "full coverage restored");
    assert_eq!(metric(&scrape(&addr), "locktrace_shed_steps"), 0.0, "{log}");

    // With coverage back, a new inversion is traced.
    target
        .child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"c")
        .unwrap();
    assert!(target.child.wait().unwrap().success());
    thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(60)) {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(tracer.wait().unwrap().success(), "{log}");
    assert!(
        log.contains("coverage incomplete"),
        "the summary names the gap:\n{log}"
    );

    let json = read_json(&report);
    let budget = &json["overhead_budget"];
    assert_eq!(budget["budget_percent"], 0.01);
    assert_eq!(
        budget["shed_at_end"].as_array().unwrap().len(),
        0,
        "{budget}"
    );
    let actions: Vec<&str> = budget["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"shed") && actions.last() == Some(&"restored"),
        "{budget}"
    );
    assert!(json["stats"]["budget_family_off_ms"].as_u64().unwrap() > 0);
    let cycles = json["cycles"].as_array().unwrap();
    let names: Vec<String> = cycles
        .iter()
        .flat_map(|cycle| cycle["classes"].as_array().unwrap().iter())
        .map(|class| class.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n == "c") && names.iter().any(|n| n == "d"),
        "the C <-> D inversion after the restore is a cycle: {cycles:#?}"
    );
}
