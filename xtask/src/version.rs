//! Alloy version strings: `X.Y.Z` or `X.Y.Z-rc.N`, with or without a leading `v`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use anyhow::bail;

/// A validated Alloy release version. Displays without the `v` (as file names use it);
/// [`Version::tag`] gives the Git tag (`v1.10.2`) that release URLs use.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    /// `Some(N)` for `-rc.N`.
    rc: Option<u64>,
}

impl Version {
    /// The release `X.Y.Z` a candidate `X.Y.Z-rc.N` leads to (a release: itself).
    pub fn release(&self) -> Version {
        Version {
            rc: None,
            ..self.clone()
        }
    }

    pub fn tag(&self) -> String {
        format!("v{self}")
    }

    /// Whether this is a release candidate (`X.Y.Z-rc.N`) rather than a release.
    pub fn is_release_candidate(&self) -> bool {
        self.rc.is_some()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(rc) = self.rc {
            write!(f, "-rc.{rc}")?;
        }
        Ok(())
    }
}

/// A decimal number without sign or leading zeros, as semver requires.
fn number(part: &str) -> Option<u64> {
    let ok = !part.is_empty()
        && part.bytes().all(|b| b.is_ascii_digit())
        && (part == "0" || !part.starts_with('0'));
    if ok {
        part.parse().ok()
    } else {
        None
    }
}

impl FromStr for Version {
    type Err = anyhow::Error;

    fn from_str(input: &str) -> anyhow::Result<Self> {
        let parsed = (|| {
            let text = input.strip_prefix('v').unwrap_or(input);
            let (core, pre) = match text.split_once('-') {
                Some((core, pre)) => (core, Some(pre)),
                None => (text, None),
            };
            let mut parts = core.split('.');
            let (major, minor, patch) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() {
                return None;
            }
            let rc = match pre {
                None => None,
                Some(pre) => Some(number(pre.strip_prefix("rc.")?)?),
            };
            Some(Version {
                major: number(major)?,
                minor: number(minor)?,
                patch: number(patch)?,
                rc,
            })
        })();
        match parsed {
            Some(version) => Ok(version),
            None => bail!(
                "invalid Alloy version {input:?}: expected X.Y.Z or X.Y.Z-rc.N, with or without a leading v (for example 1.10.2 or v1.11.0-rc.1)"
            ),
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            // A release sorts after its release candidates.
            .then_with(|| match (self.rc, other.rc) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(&b),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_releases_and_release_candidates_with_or_without_v() {
        for (input, shown, tag) in [
            ("1.10.2", "1.10.2", "v1.10.2"),
            ("v1.10.2", "1.10.2", "v1.10.2"),
            ("0.0.0", "0.0.0", "v0.0.0"),
            ("v1.11.0-rc.1", "1.11.0-rc.1", "v1.11.0-rc.1"),
            ("2.0.10-rc.12", "2.0.10-rc.12", "v2.0.10-rc.12"),
        ] {
            let version: Version = input.parse().unwrap();
            assert_eq!(version.to_string(), shown, "{input}");
            assert_eq!(version.tag(), tag, "{input}");
        }
    }

    #[test]
    fn refuses_anything_else_with_a_message_that_shows_the_form() {
        for input in [
            "",
            "v",
            "1.10",
            "1.10.2.3",
            "../x",
            "1.10.2/../../etc",
            "1.10.2;rm -rf /",
            "$(id)",
            "1.10.2 ",
            " 1.10.2",
            "01.10.2",
            "1.10.2-rc",
            "1.10.2-rc.",
            "1.10.2-beta.1",
            "1.10.2-rc.01",
            "vv1.10.2",
            "1.-1.2",
            "1.10.x",
            "１.10.2",
            "latest",
        ] {
            let err = input.parse::<Version>().unwrap_err().to_string();
            assert!(
                err.contains("expected X.Y.Z or X.Y.Z-rc.N"),
                "{input:?}: {err}"
            );
            assert!(err.contains(&format!("{input:?}")), "{input:?}: {err}");
        }
    }

    #[test]
    fn orders_by_number_not_by_text_and_puts_candidates_first() {
        let mut versions: Vec<Version> = [
            "1.10.0",
            "1.9.3",
            "1.10.0-rc.2",
            "1.10.0-rc.10",
            "1.3.4",
            "1.4.0",
        ]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
        versions.sort();
        let shown: Vec<String> = versions.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "1.3.4",
                "1.4.0",
                "1.9.3",
                "1.10.0-rc.2",
                "1.10.0-rc.10",
                "1.10.0"
            ]
        );
    }
}
