//! The embedded holiday table (Cabinet Office CSV, then PyPI `holidays`) against an independent
//! source, PyPI `jpholiday`, for every year it covers.

use std::collections::BTreeSet;
use std::process::Command;

use incoming_call::holidays::{FIRST_YEAR, HOLIDAYS, LAST_YEAR};

#[test]
#[ignore = "needs the Python venv with jpholiday (make test runs it)"]
fn the_embedded_table_matches_jpholiday_for_every_year() {
    // HOLIDAY_ORACLE_PYTHON points at another interpreter with jpholiday installed.
    let python = std::env::var("HOLIDAY_ORACLE_PYTHON").unwrap_or_else(|_| {
        test_support::repo_root()
            .join(".venv/bin/python")
            .display()
            .to_string()
    });
    let script = format!(
        "import jpholiday\nfor y in range({FIRST_YEAR}, {LAST_YEAR} + 1):\n    \
         for d, _ in jpholiday.year_holidays(y):\n        print(d.isoformat())"
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let ours: BTreeSet<String> = HOLIDAYS
        .iter()
        .map(|(y, m, d, _)| format!("{y:04}-{m:02}-{d:02}"))
        .collect();
    let missing: Vec<_> = theirs.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&theirs).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing from the table: {missing:?}; not holidays per jpholiday: {extra:?}"
    );
    assert!(
        theirs.len() > 100,
        "jpholiday answered {} dates",
        theirs.len()
    );
}
