//! Names an image gives, resolved against the image's URL, and the prefix they must stay under.
//! A remote image's backing file "base.qcow2" is the URL beside it; "../x" may not leave the
//! folder (origin and path prefix, or bucket and key prefix) the user named, unless
//! --allow-any-path; a local path (an absolute name) is never followed from a remote image.

use url::Url;

/// True for the names vdmount reads over the network.
pub fn is_url(name: &str) -> bool {
    ["http://", "https://", "s3://"].iter().any(|s| name.len() > s.len() && has_prefix(name, s))
}

/// `name` starts with `prefix`, in any case. Compared as bytes: a name an image gives may have
/// a multi-byte character where a string slice would have to cut it.
pub fn has_prefix(name: &str, prefix: &str) -> bool {
    name.as_bytes().get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The folder of `url`: everything up to its last '/', without query or fragment. Names the
/// image gives must resolve beneath it.
pub fn folder(url: &str) -> Result<String, String> {
    let mut u = parse(url)?;
    u.set_query(None);
    u.set_fragment(None);
    let s = u.as_str();
    Ok(s[..=s.rfind('/').unwrap_or(s.len() - 1)].to_string())
}

fn parse(url: &str) -> Result<Url, String> {
    let u = Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host (or bucket)".into());
    }
    Ok(u)
}

/// `name`, as the image at `child` gives it, made a URL: relative names are taken from the
/// child's folder, URLs stay as they are. A local absolute path, or a URL of another kind
/// (file:, data:...), is refused: a remote image may not name files on this machine.
pub fn resolve(child: &str, name: &str) -> Result<String, String> {
    if name.starts_with('/') || name.starts_with('\\') || name.contains('\0') {
        return Err("a path on this machine, which a remote image may never name".into());
    }
    let base = parse(child)?;
    let joined = if is_url(name) { Url::parse(name) } else { base.join(name) };
    let u = joined.map_err(|e| format!("which cannot be made a URL: {e}"))?;
    if !is_url(u.as_str()) {
        return Err(format!("a {}: URL, which vdmount does not read", u.scheme()));
    }
    // An encoded slash could climb out of the folder once the server decodes it.
    let lower = u.path().to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err("a name with an encoded slash, which could leave the image's folder".into());
    }
    Ok(u.to_string())
}

/// True when `url` lies beneath one of the folders in `roots`.
pub fn beneath(url: &str, roots: &[String]) -> bool {
    roots.iter().any(|r| url.starts_with(r.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multibyte_character_where_a_scheme_would_end_is_no_url() {
        // Found by fuzzing: slicing the name as a str panicked inside the character.
        assert!(!is_url("*:\u{fffd}"));
        assert!(!is_url("flat-\u{fffd}\u{fffd}k"));
        assert!(is_url("HTTPS://host/x") && is_url("s3://b/k") && !is_url("s3://"));
    }

    #[test]
    fn resolves_beside_and_refuses_what_leaves() {
        let top = "http://127.0.0.1:8080/images/top.qcow2";
        assert_eq!(folder(top).unwrap(), "http://127.0.0.1:8080/images/");
        assert_eq!(resolve(top, "base.qcow2").unwrap(), "http://127.0.0.1:8080/images/base.qcow2");
        assert_eq!(resolve(top, "sub/b c.vmdk").unwrap(), "http://127.0.0.1:8080/images/sub/b%20c.vmdk");
        let up = resolve(top, "../etc/passwd").unwrap();
        assert!(!beneath(&up, &[folder(top).unwrap()]));
        let up = resolve(top, "%2e%2e/x").unwrap();
        assert!(!beneath(&up, &[folder(top).unwrap()]), "{up}");
        assert!(resolve(top, "/etc/passwd").is_err());
        assert!(resolve(top, "file:///etc/passwd").is_err());
        assert!(resolve(top, "a%2f..%2f..%2fx").is_err());
        let other = resolve(top, "http://127.0.0.2/images/x").unwrap();
        assert!(!beneath(&other, &[folder(top).unwrap()]));
        // Another port is another origin.
        assert!(!beneath("http://127.0.0.1:80801/images/x", &["http://127.0.0.1:8080/images/".into()]));
        let s3 = "s3://bucket/vm/top.qcow2";
        assert_eq!(resolve(s3, "base.qcow2").unwrap(), "s3://bucket/vm/base.qcow2");
        assert!(!beneath(&resolve(s3, "../other/x").unwrap(), &[folder(s3).unwrap()]));
        assert!(is_url("HTTPS://x/y") && !is_url("http://") && !is_url("disk.qcow2"));
    }
}
