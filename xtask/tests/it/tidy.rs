//! The README stays in step with the code: every flag `cargo xtask build --help` shows is in
//! the README's option table, and every flag the table names exists.

use std::process::Command;

use crate::support::XTASK;

/// `--flag` words in `text` (letters, digits and dashes after two dashes).
fn flags(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("--") {
        let rest = &text[i + 2..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if name.len() > 1 && !found.contains(&format!("--{name}")) {
            found.push(format!("--{name}"));
        }
    }
    found
}

#[test]
fn the_readme_option_table_matches_build_help() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme
        .split("### Options and environment")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has an Options and environment section");
    let table: Vec<String> = flags(section)
        .into_iter()
        .filter(|f| f != "--help")
        .collect();

    let help = Command::new(XTASK)
        .args(["build", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    let shown: Vec<String> = flags(&help)
        .into_iter()
        .filter(|f| f != "--help" && f != "--version")
        .collect();
    assert!(shown.len() >= 8, "{shown:?}");

    let missing: Vec<&String> = shown.iter().filter(|f| !table.contains(f)).collect();
    assert!(
        missing.is_empty(),
        "README's option table lacks {missing:?}"
    );
    let unknown: Vec<&String> = table.iter().filter(|f| !shown.contains(f)).collect();
    assert!(
        unknown.is_empty(),
        "README's option table names {unknown:?}, which build --help does not show"
    );
}
