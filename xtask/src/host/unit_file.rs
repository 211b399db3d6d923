//! Unit-style files (systemd units and drop-ins, sysupdate transfers) read the way systemd
//! reads them: `[Section]` headers and `Key=Value` lines, comments and blank lines dropped.
//! The tests read what the host code writes through it.

use anyhow::bail;

/// One setting: (section, key, value).
pub type Setting = (String, String, String);

/// Every setting of `text`, in order; a line that is neither a section, a setting, a comment
/// nor blank is an error naming it.
pub fn settings(text: &str) -> anyhow::Result<Vec<Setting>> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            out.push((
                section.clone(),
                key.trim().to_string(),
                value.trim().to_string(),
            ));
        } else {
            bail!("{line:?} is not a [Section] or a Key=Value line");
        }
    }
    Ok(out)
}

/// The value of `key` in `[section]`, when it is set exactly once.
pub fn value<'a>(entries: &'a [Setting], section: &str, key: &str) -> Option<&'a str> {
    let mut found = entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_and_settings_as_systemd_does() {
        let text = "# c\n[Source]\nType=url-file\n\n[Target]\nPath = /opt\nX=1\nX=2\n";
        let e = settings(text).unwrap();
        assert_eq!(value(&e, "Source", "Type"), Some("url-file"));
        assert_eq!(value(&e, "Target", "Path"), Some("/opt"));
        assert_eq!(value(&e, "Target", "X"), None, "set twice");
        assert_eq!(value(&e, "Source", "Path"), None);
        assert!(settings("[A]\njunk\n").is_err());
    }
}
