//! The names of the files beside a remote image, for a differencing VDI, whose parent is named
//! only by UUID: the reader has to look at each .vdi in the folder. A URL folder has no
//! listing of its own, so: s3:// asks ListObjectsV2 (the keys directly under the prefix), and
//! http(s):// reads the folder's index page if the server makes one (nginx autoindex, Apache)
//! and takes the links that name a plain file in that same folder. Both are bounded
//! (limits.rs); callers still open every name through the confinement.

use super::{http, s3, url};
use crate::limits::{
    LISTING_KEYS_PER_PAGE, MAX_LISTING_BYTES, MAX_LISTING_NAMES, MAX_LISTING_PAGES, MAX_S3_LISTING_BYTES,
};
use std::io::Read;

/// The plain file names (sorted, at most MAX_LISTING_NAMES) in the folder of `url`, as names
/// to resolve against it (the characters a URL would take otherwise escaped); or why the
/// folder cannot be listed.
pub fn list_folder(url: &str) -> Result<Vec<String>, String> {
    let names = if url::has_prefix(url, "s3://") { list_s3(url)? } else { list_http(&url::folder(url)?)? };
    let mut names: Vec<String> = names.iter().map(|n| escaped(n)).collect();
    names.sort();
    names.dedup();
    names.truncate(MAX_LISTING_NAMES);
    Ok(names)
}

/// `name` with '%', '?' and '#' escaped, so that resolving it as a relative URL names that file
/// (and not a query, a fragment, or another escape).
fn escaped(name: &str) -> String {
    name.replace('%', "%25").replace('?', "%3F").replace('#', "%23")
}

/// GETs `u` once (with retries on 5xx and broken connections): its body, at most `limit`
/// bytes of it.
fn get_body(u: &str, limit: u64) -> Result<Vec<u8>, String> {
    let agent = http::agent()?;
    http::with_retries(u, || {
        let mut resp = agent
            .get(u)
            .header("Accept-Encoding", "identity")
            .call()
            .map_err(|e| http::Failure::Retry(e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            408 | 429 | 500..=599 => return Err(http::Failure::Retry(format!("HTTP {}", resp.status().as_u16()))),
            s => return Err(http::Failure::Fatal(format!("HTTP {s}"))),
        }
        let mut body = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(limit)
            .read_to_end(&mut body)
            .map_err(|e| http::Failure::Retry(format!("the answer broke off: {e}")))?;
        Ok(body)
    })
}

fn list_s3(u: &str) -> Result<Vec<String>, String> {
    let object = s3::S3Object::new(u)?;
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_LISTING_PAGES {
        let (signed, prefix) = object.signed_list_url(token.as_deref(), LISTING_KEYS_PER_PAGE);
        let body = get_body(&signed, MAX_S3_LISTING_BYTES)?;
        let text = String::from_utf8(body).map_err(|_| "the bucket listing is not UTF-8".to_string())?;
        let page = rusty_s3::actions::ListObjectsV2::parse_response(&text)
            .map_err(|e| format!("cannot read the bucket listing: {e}"))?;
        // With delimiter "/", keys in deeper folders come as common prefixes, not contents.
        names.extend(page.contents.into_iter().filter_map(|c| c.key.strip_prefix(&prefix).map(str::to_string)));
        token = page.next_continuation_token;
        if token.is_none() || names.len() >= MAX_LISTING_NAMES {
            break;
        }
    }
    Ok(names.into_iter().filter(|n| plain_name(n)).collect())
}

fn list_http(folder: &str) -> Result<Vec<String>, String> {
    let body = get_body(folder, MAX_LISTING_BYTES)?;
    let page = String::from_utf8_lossy(&body);
    let names: Vec<String> = hrefs(&page).filter_map(file_in_folder).collect();
    if names.is_empty() && !page.to_ascii_lowercase().contains("href") {
        return Err("the answer is no folder listing".into());
    }
    Ok(names)
}

/// The values of the href attributes in an HTML page, quoted with " or '.
fn hrefs(page: &str) -> impl Iterator<Item = &str> {
    let lower = page.to_ascii_lowercase();
    let starts: Vec<usize> = lower.match_indices("href=").map(|(i, _)| i + 5).collect();
    starts.into_iter().filter_map(move |at| {
        let quote = *page.as_bytes().get(at)?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let rest = &page[at + 1..];
        rest.find(quote as char).map(|end| &rest[..end])
    })
}

/// A link's target, if it names a plain file in the listed folder itself: relative, no scheme,
/// query, fragment, entity or folder part; decoded.
fn file_in_folder(href: &str) -> Option<String> {
    if href.is_empty() || href.contains([':', '?', '#', '&', '/', '\\']) {
        return None;
    }
    let name = s3::percent_decode(href).ok()?;
    plain_name(&name).then_some(name)
}

/// A name that stays in its folder once resolved: no separator, not "." or "..".
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_links_to_files_in_the_folder_itself() {
        let page = r#"<a href="../">../</a><a href="base.vdi">base.vdi</a><a HREF='b%20c.VDI'>x</a>
            <a href="../x.vdi">x</a><a href="http://other/x.vdi">y</a><a href="/abs.vdi">z</a>
            <a href="sub/">sub</a><a href="a%2f..%2fx.vdi">e</a><a href="%2e%2e">d</a><a href=bare.vdi>"#;
        let got: Vec<String> = hrefs(page).filter_map(file_in_folder).collect();
        assert_eq!(got, ["base.vdi", "b c.VDI"]);
        let back = url::resolve("s3://b/vm/c.vdi", &escaped("50% a?#.vdi")).unwrap();
        assert_eq!(s3::percent_decode(back.strip_prefix("s3://b/").unwrap()).unwrap(), "vm/50% a?#.vdi");
    }
}
