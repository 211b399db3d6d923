//! What a Flatcar host needs besides the image: the configuration that installs the image
//! ([`butane`]) and what keeps it current ([`sysupdate`]: the transfer file, the
//! `alloy-sysupdate` script and its units); [`unit_file`] reads unit-style files as systemd does.

pub mod butane;
pub mod sysupdate;
pub mod unit_file;

use crate::payload::service;

/// Every `sh -c '...'` / `sh -c "..."` body in the units and drop-ins we generate, with the
/// unit it comes from, for shellcheck (`cargo xtask check`; the `alloy-sysupdate` script is
/// checked whole, [`sysupdate::UPDATE_SCRIPT_TEXT`]).
pub fn shell_snippets() -> Vec<(&'static str, String)> {
    let units: [(&'static str, String); 3] = [
        ("alloy.service", service::unit()),
        ("alloy-setup.service", service::setup_unit()),
        ("alloy-sysupdate.service", sysupdate::update_service()),
    ];
    let mut snippets = Vec::new();
    for (unit, text) in units {
        for body in sh_c_bodies(&text) {
            snippets.push((unit, body));
        }
    }
    snippets
}

/// The bodies of `sh -c "BODY"` and `sh -c 'BODY'` in a unit file, with systemd's line
/// continuations joined and its `$$` (a literal `$`) undone.
pub fn sh_c_bodies(unit: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let joined = unit.replace("\\\n", " ");
    for line in joined.lines() {
        let Some(at) = line.find("sh -c ") else {
            continue;
        };
        let rest = line[at + 6..].trim();
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        if let Some(end) = rest[1..].rfind(quote) {
            bodies.push(rest[1..1 + end].replace("$$", "$"));
        }
    }
    bodies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_shell_in_unit_lines() {
        let unit = "ExecReload=/bin/sh -c 'kill -HUP $MAINPID'\nExecStart=/usr/bin/true\nExecStartPost=/usr/bin/sh -c \"a $$x || b\"\nExecStart=/bin/sh -c '\\\n  c && \\\n  d'\n";
        assert_eq!(
            sh_c_bodies(unit),
            ["kill -HUP $MAINPID", "a $x || b", "   c &&    d"]
        );
        assert!(!shell_snippets().is_empty());
    }
}
