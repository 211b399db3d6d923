//! SHA-256 digests and the `sha256sum` text format (`SHA256SUMS`, `*.sha256`).

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;

use super::handoff::relay;
use anyhow::{bail, Context};
use sha2::{Digest as _, Sha256};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

impl FromStr for Digest {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Digest> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "{} is not a SHA-256 digest (64 hexadecimal digits)",
                shown(text)
            );
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)?;
        }
        Ok(Digest(bytes))
    }
}

/// One line of a `sha256sum` listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumLine {
    pub digest: Digest,
    pub name: String,
}

/// How much of an offending line an error shows: enough to recognise it, never megabytes.
const SHOWN_LINE: usize = 80;

/// A line for an error message: cut at [`SHOWN_LINE`] characters, with its length said.
pub fn shown(line: &str) -> String {
    if line.chars().count() <= SHOWN_LINE {
        return format!("{line:?}");
    }
    let cut: String = line.chars().take(SHOWN_LINE).collect();
    format!("{cut:?}... ({} bytes in all)", line.len())
}

/// Parses `sha256sum` output, as `sha256sum -c` reads it: `<64 hex>  <name>` (text mode) or
/// `<64 hex> *<name>` (binary mode) per line; a line starting with `\` holds an escaped name
/// (`\\` a backslash, `\n` a newline, `\r` a carriage return), as GNU sha256sum writes
/// names holding those. Blank lines and `#` comments are skipped; anything else malformed is an
/// error naming the line (cut short).
pub fn parse(text: &str) -> anyhow::Result<Vec<SumLine>> {
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Some(parsed) => lines.push(parsed),
            None => bail!(
                "line {} is not in sha256sum format (\"<64 hex digits>  <file name>\"): {}",
                number + 1,
                shown(line)
            ),
        }
    }
    Ok(lines)
}

fn parse_line(line: &str) -> Option<SumLine> {
    let (escaped, rest) = match line.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let hex = rest.get(..64)?;
    let name = rest
        .get(64..)?
        .strip_prefix("  ")
        .or_else(|| rest.get(64..)?.strip_prefix(" *"))?;
    let name = if escaped {
        unescape(name)?
    } else {
        name.to_string()
    };
    if name.is_empty() {
        return None;
    }
    Some(SumLine {
        digest: hex.parse().ok()?,
        name,
    })
}

/// GNU sha256sum's escapes in a name: `\\`, `\n`, `\r`; any other is malformed.
fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

/// The digest listed for `name`, if any. Two different digests for one name are an error.
pub fn lookup(entries: &[SumLine], name: &str) -> anyhow::Result<Option<Digest>> {
    let mut found: Option<Digest> = None;
    for entry in entries.iter().filter(|e| e.name == name) {
        match found {
            Some(digest) if digest != entry.digest => {
                bail!(
                    "{name} is listed twice with different digests ({digest} and {})",
                    entry.digest
                )
            }
            _ => found = Some(entry.digest),
        }
    }
    Ok(found)
}

/// A parsed `sha256sum` listing, with where it came from for messages: the one way every
/// command finds a file's expected digest.
#[derive(Clone, Debug)]
pub struct Sums {
    pub entries: Vec<SumLine>,
    /// A path or URL, as messages name it.
    pub source: String,
}

impl Sums {
    pub fn parse(text: &str, source: impl Into<String>) -> anyhow::Result<Sums> {
        let source = source.into();
        let entries = parse(text).with_context(|| format!("reading {source}"))?;
        Ok(Sums { entries, source })
    }

    /// The digest listed for `name`, if any.
    pub fn get(&self, name: &str) -> anyhow::Result<Option<Digest>> {
        lookup(&self.entries, name).with_context(|| format!("reading {}", self.source))
    }

    /// The digest listed for `name`; its absence is an error naming the listing.
    pub fn require(&self, name: &str) -> anyhow::Result<Digest> {
        match self.get(name)? {
            Some(digest) => Ok(digest),
            None => bail!("{} has no line for {name}", self.source),
        }
    }
}

/// One line exactly as `sha256sum` writes it (text mode, two spaces; a name holding a
/// backslash, newline or carriage return escaped, the line then starting with `\\`).
pub fn line(digest: &Digest, name: &str) -> String {
    if !name.contains(['\\', '\n', '\r']) {
        return format!("{digest}  {name}\n");
    }
    let escaped = name
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r");
    format!("\\{digest}  {escaped}\n")
}

/// A writer that hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Forgets what was hashed, to write again from the start; the caller truncates the inner writer.
    pub fn start_over(&mut self) -> &mut W {
        self.hasher = Sha256::new();
        self.written = 0;
        &mut self.inner
    }

    pub fn finish(self) -> (W, Digest) {
        (self.inner, Digest(self.hasher.finalize().into()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Size of the buffers we stream big files through.
pub const BUFFER_SIZE: usize = 1 << 20;

/// Hashes a reader to its end, in fixed-size chunks.
pub fn hash_reader(mut reader: impl Read) -> io::Result<(Digest, u64)> {
    // Reading (a copy out of the page cache, or a download) on this thread, hashing on another.
    relay(&mut reader, |chunks| {
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        chunks.for_each(|chunk| {
            hasher.update(chunk);
            total += chunk.len() as u64;
            Ok(())
        })?;
        Ok((Digest(hasher.finalize().into()), total))
    })
    .map_err(|err| match err.downcast::<io::Error>() {
        Ok(io) => io,
        Err(other) => io::Error::other(format!("{other:#}")),
    })
}

/// Hashes a file, streaming it.
pub fn hash_file(path: &Path) -> anyhow::Result<(Digest, u64)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    hash_reader(file).with_context(|| format!("reading {}", path.display()))
}

pub fn hash_bytes(bytes: &[u8]) -> Digest {
    Digest(Sha256::digest(bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_round_trips_and_matches_sha256sum() {
        assert_eq!(hash_bytes(b"").to_string(), EMPTY);
        assert_eq!(EMPTY.parse::<Digest>().unwrap(), hash_bytes(b""));
        assert_eq!(
            EMPTY.to_uppercase().parse::<Digest>().unwrap(),
            hash_bytes(b"")
        );
        assert!("abc".parse::<Digest>().is_err());
        assert!(EMPTY.replace('e', "g").parse::<Digest>().is_err());
    }

    #[test]
    fn parses_text_and_binary_mode_lines() {
        let text = format!("{EMPTY}  alloy-linux-amd64.zip\n\n{EMPTY} *alloy-linux-arm64.zip\n{EMPTY}  alloy-1.10.2.tar.gz\n");
        let entries = parse(&text).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "alloy-linux-amd64.zip",
                "alloy-linux-arm64.zip",
                "alloy-1.10.2.tar.gz"
            ]
        );
        assert_eq!(
            lookup(&entries, "alloy-linux-arm64.zip").unwrap(),
            Some(hash_bytes(b""))
        );
        assert_eq!(lookup(&entries, "alloy-linux-s390x.zip").unwrap(), None);
    }

    #[test]
    fn malformed_lines_are_errors_that_name_the_line() {
        for text in [
            "not a checksum\n".to_string(),
            format!("{EMPTY} alloy\n"),
            format!("{EMPTY}  \n"),
            format!("{}  alloy\n", &EMPTY[..63]),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(
                err.contains("line 1 is not in sha256sum format"),
                "{text:?}: {err}"
            );
        }
    }

    /// What GNU sha256sum (coreutils 9.1) writes for names with a newline and a backslash, and
    /// comments, read as `sha256sum -c` reads them; and written back the same way.
    #[test]
    fn escaped_names_and_comments_are_read_as_sha256sum_does() {
        let text = format!(
            "# made by sha256sum\n\\{EMPTY}  name\\nwith newline\n\\{EMPTY}  back\\\\slash\n{EMPTY}  plain\n"
        );
        let lines = parse(&text).unwrap();
        let names: Vec<&str> = lines.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["name\nwith newline", "back\\slash", "plain"]);
        for parsed in &lines {
            let written = line(&parsed.digest, &parsed.name);
            assert_eq!(
                parse(&written).unwrap(),
                std::slice::from_ref(parsed),
                "{written:?}"
            );
        }
        assert_eq!(
            line(&hash_bytes(b""), "a\nb"),
            format!("\\{EMPTY}  a\\nb\n")
        );
        // An escape GNU does not write is malformed, not guessed.
        assert!(parse(&format!("\\{EMPTY}  a\\tb\n")).is_err());
    }

    /// A malformed line of megabytes is named, not echoed whole.
    #[test]
    fn a_long_malformed_line_is_cut_in_the_error() {
        let long = "x".repeat(5 << 20);
        let err = parse(&long).unwrap_err().to_string();
        assert!(err.len() < 300, "{} bytes of error", err.len());
        assert!(err.contains("(5242880 bytes in all)"), "{err}");
        let err = "y".repeat(1000).parse::<Digest>().unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
    }

    #[test]
    fn conflicting_duplicates_are_an_error_and_identical_ones_are_not() {
        let other = hash_bytes(b"x");
        let entries = parse(&format!("{EMPTY}  a\n{other}  a\n{EMPTY}  b\n{EMPTY}  b\n")).unwrap();
        assert!(lookup(&entries, "a")
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        assert_eq!(lookup(&entries, "b").unwrap(), Some(hash_bytes(b"")));
    }

    #[test]
    fn a_missing_line_is_an_error_naming_the_listing() {
        let sums = Sums::parse(&format!("{EMPTY}  a\n"), "https://x/SHA256SUMS").unwrap();
        assert_eq!(sums.require("a").unwrap(), hash_bytes(b""));
        assert_eq!(sums.get("b").unwrap(), None);
        assert_eq!(
            sums.require("b").unwrap_err().to_string(),
            "https://x/SHA256SUMS has no line for b"
        );
        let err = Sums::parse("junk\n", "f").unwrap_err();
        assert!(
            format!("{err:#}").starts_with("reading f: line 1"),
            "{err:#}"
        );
    }

    #[test]
    fn writes_exactly_what_sha256sum_writes() {
        assert_eq!(
            line(&hash_bytes(b""), "alloy-1.10.2-amd64.raw"),
            format!("{EMPTY}  alloy-1.10.2-amd64.raw\n")
        );
    }

    #[test]
    fn hashing_writer_hashes_what_passes_through() {
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(b"hello ").unwrap();
        writer.write_all(b"world").unwrap();
        assert_eq!(writer.written(), 11);
        let (bytes, digest) = writer.finish();
        assert_eq!(bytes, b"hello world");
        assert_eq!(digest, hash_bytes(b"hello world"));
        assert_eq!(hash_reader(&b"hello world"[..]).unwrap(), (digest, 11));
    }
}
