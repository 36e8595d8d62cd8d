//! The rule table (`tests/data/lockdep-rules.txt`) run against the offline simulator: each
//! case's steps must create exactly its listed dependencies, guards and findings. The same
//! table is checked against the eBPF side by the `semantics` VM scenario.

use lockgraph::rules::parse_rule_table;

const RULES: &str = include_str!("data/lockdep-rules.txt");

#[test]
fn the_simulator_follows_every_rule_of_the_table() {
    let cases = parse_rule_table(RULES).unwrap();
    assert!(cases.len() >= 10, "the table has its cases");
    let mut failures = Vec::new();
    for case in &cases {
        let got = case.simulate();
        if got != case.expected {
            failures.push(format!(
                "case `{}`:\n  expected {:?}\n  got      {:?}",
                case.title, case.expected, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_case_that_breaks_a_rule_fails() {
    // The table's own check must be able to fail: a wrong expectation is caught.
    let wrong = "case outer locks do not reach new directly\n  lock a.1; lock b.1; lock c.1\n  \
                 dep a -> b\n  dep b -> c\n  dep a -> c\n";
    let case = &parse_rule_table(wrong).unwrap()[0];
    assert_ne!(case.simulate(), case.expected);
}

#[test]
fn bad_tables_name_the_line() {
    for (table, line) in [
        ("lock a.1\n", 1),
        ("case x\n  lock a\n", 2),
        ("case x\n  grab a.1\n", 2),
        ("case x\n  dep a b\n", 2),
    ] {
        let err = parse_rule_table(table).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("line {line}:")),
            "{table:?}: {err}"
        );
    }
}

#[test]
fn verdicts_keep_only_what_decides_a_guard() {
    let case = &parse_rule_table(
        "case x\n  lock g.1; lock a.1; lock b.1; unlock b.1; unlock a.1; unlock g.1\n  \
         lock g.2; lock a.1; lock b.1\n  dep g -> a\n  dep a -> b guard g.1\n  \
         dep a -> b guard g.2\n",
    )
    .unwrap()[0];
    let verdicts = case.expected.verdicts();
    assert_eq!(
        verdicts[&("a".to_string(), "b".to_string())],
        None,
        "two instances: none"
    );
    assert_eq!(verdicts[&("g".to_string(), "a".to_string())], None);
}
