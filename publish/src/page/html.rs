//! `index.html`: one static page, no JavaScript, no outside resource (fonts, styles, images),
//! one column on a phone and the architectures side by side on a desktop. Every value it
//! prints goes through [`escape`], in text and in attributes alike.

use xtask::contract::{Channel, INDEX_NAME, PAGE_DATA_NAME, PAGE_NAME, SIGNATURE_NAME};
use xtask::util::progress::mib;

use super::{Image, Page, Release};

/// `text` safe in HTML text and in a quoted attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page forbids itself every script and every outside resource: readable as it is, and
/// an entry that slipped through escaping still could not run.
const POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

const STYLE: &str = r#"
:root { color-scheme: light dark; --fg: #1d2026; --muted: #5b6170; --line: #d6d9e0;
  --card: #f5f6f8; --code: #eceef2; --accent: #1f5fbf; --ok: #1d7a3e; --warn: #a3470f; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e8ec; --muted: #a3a9b6; --line: #3a3f4a; --card: #1c1f25; --code: #262a32;
    --accent: #7eaaf2; --ok: #6fcf8f; --warn: #f0a36b; }
  body { background: #121418; }
}
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); font: 16px/1.5 system-ui, -apple-system, "Segoe UI",
  Roboto, "DejaVu Sans", sans-serif; }
header, main, footer { max-width: 64rem; margin: 0 auto; padding: 0 1rem; }
header { padding-top: 1.25rem; }
h1 { font-size: 1.5rem; line-height: 1.25; margin: 0 0 .5rem; }
a { color: var(--accent); }
.facts { margin: .25rem 0; color: var(--muted); }
.signed { color: var(--ok); font-weight: 600; }
.unsigned { color: var(--warn); font-weight: 600; }
.release { border: 1px solid var(--line); border-radius: .5rem; background: var(--card);
  padding: 1rem; margin: 1rem 0; }
.release h2 { font-size: 1.25rem; margin: 0; display: flex; flex-wrap: wrap; gap: .5rem;
  align-items: baseline; }
.badge { font-size: .75rem; font-weight: 600; border-radius: 1rem; padding: .05rem .6rem;
  border: 1px solid currentColor; color: var(--accent); }
.when { margin: .25rem 0 .75rem; color: var(--muted); font-size: .9rem; }
.images { display: grid; grid-template-columns: 1fr; gap: .75rem; }
@media (min-width: 52rem) { .images { grid-template-columns: 1fr 1fr; } }
.image { border-top: 1px solid var(--line); padding-top: .75rem; min-width: 0; }
.image h3 { font-size: 1rem; margin: 0 0 .25rem; }
dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: .15rem .75rem;
  margin: 0 0 .5rem; font-size: .9rem; }
dt { color: var(--muted); }
dd { margin: 0; min-width: 0; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .85rem; }
.digest { word-break: break-all; }
details { margin-top: .5rem; }
details summary { cursor: pointer; color: var(--accent); }
pre { background: var(--code); border-radius: .375rem; padding: .75rem; overflow-x: auto;
  font-size: .8rem; line-height: 1.4; margin: .5rem 0 0; }
.others li { word-break: break-all; }
footer { color: var(--muted); font-size: .85rem; padding-bottom: 2rem; }
"#;

/// The whole page.
pub fn render(page: &Page) -> String {
    let title = format!(
        "Grafana Alloy sysext images for Flatcar: {} channel",
        page.channel
    );
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{POLICY}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    out.push_str(&header(page, &title));
    out.push_str("<main>\n");
    if page.releases.is_empty() {
        out.push_str("<p>Nothing is published in this channel yet.</p>\n");
    }
    for (i, release) in page.releases.iter().enumerate() {
        out.push_str(&release_section(page, release, i == 0));
    }
    if page.omitted_releases > 0 {
        out.push_str(&format!(
            "<p>{} older releases are listed in <a href=\"{INDEX_NAME}\">{INDEX_NAME}</a>, not here.</p>\n",
            page.omitted_releases
        ));
    }
    out.push_str(&others(page));
    out.push_str(&format!(
        "</main>\n<footer><p>Made by <code>cargo xtask publish</code> from this folder's \
         <a href=\"{index}\">{index}</a> each time a release is published. Hosts follow it with \
         systemd-sysupdate; each snippet above installs one image, checked by Ignition against \
         its SHA-256.</p></footer>\n</body>\n</html>\n",
        index = escape(INDEX_NAME)
    ));
    out
}

fn header(page: &Page, title: &str) -> String {
    let other = match page.channel {
        Channel::Stable => format!(
            "Release candidates are in <a href=\"rc/{PAGE_NAME}\">the rc channel</a>."
        ),
        Channel::Rc => format!(
            "Release candidates only (X.Y.Z-rc.N); releases are in <a href=\"../{PAGE_NAME}\">the stable channel</a>."
        ),
    };
    let signature = if page.signed {
        format!(
            "<span class=\"signed\">signed</span> (<a href=\"{SIGNATURE_NAME}\">{SIGNATURE_NAME}</a>)"
        )
    } else {
        "<span class=\"unsigned\">not signed</span>".to_string()
    };
    format!(
        "<header>\n<h1>{}</h1>\n<p class=\"facts\">{other}</p>\n\
         <p class=\"facts\">Index: <a href=\"{INDEX_NAME}\">{INDEX_NAME}</a>, {signature}. \
         For scripts: <a href=\"{PAGE_DATA_NAME}\">{PAGE_DATA_NAME}</a>. Base URL: <code>{}/</code></p>\n</header>\n",
        escape(title),
        escape(&page.url)
    )
}

fn release_section(page: &Page, release: &Release, newest: bool) -> String {
    let version = escape(&release.version.to_string());
    let badge = if newest {
        " <span class=\"badge\">newest</span>"
    } else {
        ""
    };
    let signed = if page.signed {
        "listed in the signed index"
    } else {
        "listed in the index, which is not signed"
    };
    let mut out = format!(
        "<section class=\"release\" id=\"v{version}\">\n<h2>Alloy {version}{badge}</h2>\n\
         <p class=\"when\">Published {}, {signed}</p>\n<div class=\"images\">\n",
        escape(
            &release
                .published()
                .map(shown_date)
                .unwrap_or("date unknown".into())
        )
    );
    for image in &release.images {
        out.push_str(&image_card(image));
    }
    out.push_str("</div>\n");
    // Below the cards, the full width: a Butane line is longer than half a desktop.
    for (i, image) in release.images.iter().enumerate() {
        out.push_str(&butane_snippet(page, image, newest && i == 0));
    }
    out.push_str("</section>\n");
    out
}

/// `2026-01-02T03:04:05Z` as `2026-01-02 03:04 UTC`.
fn shown_date(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => rfc3339.to_string(),
    }
}

fn image_card(image: &Image) -> String {
    let name = escape(&image.name.file_name());
    let size = match image.size {
        Some(size) => escape(&mib(size)),
        None => "<span class=\"unsigned\">missing from the bucket</span>".to_string(),
    };
    format!(
        "<div class=\"image\">\n<h3>{arch}</h3>\n<dl>\n\
         <dt>file</dt><dd><a href=\"{name}\">{name}</a> (<a href=\"{name}.sha256\">.sha256</a>)</dd>\n\
         <dt>size</dt><dd>{size}</dd>\n\
         <dt>SHA-256</dt><dd><code class=\"digest\">{digest}</code></dd>\n</dl>\n</div>\n",
        arch = escape(image.name.arch.name()),
        digest = escape(&image.digest.to_string()),
    )
}

/// The Butane config that installs `image`, ready to copy; `open` shows it unfolded.
fn butane_snippet(page: &Page, image: &Image, open: bool) -> String {
    format!(
        "<details{open}><summary>Butane for {arch}, pinned by digest</summary>\n\
         <pre><code>{butane}</code></pre>\n</details>\n",
        open = if open { " open" } else { "" },
        arch = escape(image.name.arch.name()),
        butane = escape(&page.butane(image)),
    )
}

/// Lines of the index that are no image of this channel: shown, since hosts read them too.
fn others(page: &Page) -> String {
    if page.others.is_empty() {
        return String::new();
    }
    let mut out =
        format!("<section class=\"others\">\n<h2>Other entries in {INDEX_NAME}</h2>\n<ul>\n");
    for line in &page.others {
        out.push_str(&format!(
            "<li><code>{}</code> <code class=\"digest\">{}</code></li>\n",
            escape(&line.name),
            escape(&line.digest.to_string())
        ));
    }
    if page.omitted_others > 0 {
        out.push_str(&format!("<li>and {} more</li>\n", page.omitted_others));
    }
    out.push_str("</ul>\n</section>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::Listed;
    use xtask::util::checksums::{hash_bytes, SumLine};

    #[test]
    fn escapes_what_html_gives_meaning_to() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("1.10.2"), "1.10.2");
    }

    #[test]
    fn every_value_is_escaped_and_nothing_runs() {
        let hostile = "<script>alert(1)</script>.raw";
        let index = [
            SumLine {
                digest: hash_bytes(b"a"),
                name: "alloy-1.10.2-amd64.raw".into(),
            },
            SumLine {
                digest: hash_bytes(b"b"),
                name: hostile.into(),
            },
        ];
        let listing = [Listed {
            name: "alloy-1.10.2-amd64.raw".into(),
            size: 1 << 20,
            last_modified: Some("2026-01-02T03:04:05Z".into()),
        }];
        let page = Page::new(
            Channel::Stable,
            "https://b.example/a'b&c=\"d\"",
            &index,
            &listing,
            false,
        );
        let html = page.html();
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("content=\"default-src 'none';"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;.raw"),
            "{html}"
        );
        assert!(
            html.contains("https://b.example/a&#39;b&amp;c=&quot;d&quot;/"),
            "{html}"
        );
        assert!(!html.contains("a'b"), "{html}");
        assert!(html.contains("Published 2026-01-02 03:04 UTC"), "{html}");
        assert!(html.contains("not signed"), "{html}");
    }

    #[test]
    fn dates_show_to_the_minute() {
        assert_eq!(shown_date("2026-01-02T03:04:05Z"), "2026-01-02 03:04 UTC");
        assert_eq!(shown_date("soon"), "soon");
    }
}
