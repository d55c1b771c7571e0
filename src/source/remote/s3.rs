//! s3://bucket/key: the object is read with presigned GET URLs (rusty-s3 signs them, SigV4,
//! query-string form), so every request is a plain ranged GET through the same client as
//! http(s). Credentials, region and endpoint come the usual way: AWS_ACCESS_KEY_ID,
//! AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, else AWS_PROFILE (or "default") in
//! ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE); AWS_REGION or AWS_DEFAULT_REGION, else the
//! profile's region in ~/.aws/config (AWS_CONFIG_FILE), else us-east-1; AWS_ENDPOINT_URL_S3 or
//! AWS_ENDPOINT_URL for Ceph, MinIO or GCS (path-style URLs), else AWS (virtual-host style).
//! No credentials at all: unsigned requests, for public buckets.

use crate::limits::MAX_AWS_FILE_BYTES;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::path::PathBuf;
use std::time::Duration;

/// How long one signed URL is good for: each request signs its own, so this only has to cover
/// one request and the clock skew.
const SIGNED_FOR: Duration = Duration::from_secs(900);

pub struct S3Object {
    bucket: Bucket,
    key: String,
    creds: Option<Credentials>,
}

impl S3Object {
    /// Parses `s3://bucket/key` and finds the credentials, region and endpoint.
    pub fn new(url: &str) -> Result<S3Object, String> {
        let rest = &url["s3://".len()..];
        let (bucket, key) = rest.split_once('/').ok_or("an s3 URL is s3://BUCKET/KEY")?;
        let key = percent_decode(key)?;
        if bucket.is_empty() || key.is_empty() {
            return Err("an s3 URL is s3://BUCKET/KEY".into());
        }
        let profile = env("AWS_PROFILE").or_else(|| env("AWS_DEFAULT_PROFILE")).unwrap_or_else(|| "default".into());
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| aws_file("AWS_CONFIG_FILE", "config", &profile, "region", true))
            .unwrap_or_else(|| "us-east-1".into());
        let custom = env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL"));
        let (endpoint, style) = match custom {
            Some(e) => (e, UrlStyle::Path),
            None => (format!("https://s3.{region}.amazonaws.com"), UrlStyle::VirtualHost),
        };
        let endpoint = endpoint.parse().map_err(|e| format!("the S3 endpoint {endpoint:?} is not a URL: {e}"))?;
        let bucket = Bucket::new(endpoint, style, bucket.to_string(), region)
            .map_err(|e| format!("cannot address bucket {bucket:?}: {e}"))?;
        Ok(S3Object { bucket, key, creds: credentials(&profile) })
    }

    /// A presigned ListObjectsV2 URL for the keys directly in the object's folder (prefix: the
    /// key up to its last '/', delimiter "/"), from `token` on; and that prefix.
    pub fn signed_list_url(&self, token: Option<&str>, max_keys: usize) -> (String, String) {
        let prefix = self.key[..self.key.rfind('/').map_or(0, |i| i + 1)].to_string();
        let mut list = self.bucket.list_objects_v2(self.creds.as_ref());
        list.with_prefix(prefix.clone());
        list.with_delimiter("/");
        list.with_max_keys(max_keys);
        if let Some(t) = token {
            list.with_continuation_token(t.to_string());
        }
        (list.sign(SIGNED_FOR).to_string(), prefix)
    }

    /// A fresh presigned GET URL for the object.
    pub fn signed_url(&self) -> String {
        self.bucket.get_object(self.creds.as_ref(), &self.key).sign(SIGNED_FOR).to_string()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn credentials(profile: &str) -> Option<Credentials> {
    let from = |key: Option<String>, secret: Option<String>, token: Option<String>| match (key, secret, token) {
        (Some(k), Some(s), Some(t)) => Some(Credentials::new_with_token(k, s, t)),
        (Some(k), Some(s), None) => Some(Credentials::new(k, s)),
        _ => None,
    };
    from(env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"), env("AWS_SESSION_TOKEN")).or_else(|| {
        let get = |k| aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials", profile, k, false);
        from(get("aws_access_key_id"), get("aws_secret_access_key"), get("aws_session_token"))
    })
}

/// `key` in `profile`'s section of an ~/.aws file (`var` overrides its path). In the config
/// file, profiles other than "default" are "[profile NAME]".
fn aws_file(var: &str, name: &str, profile: &str, key: &str, config: bool) -> Option<String> {
    let path = env(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws").join(name)))?;
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > MAX_AWS_FILE_BYTES {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let section = if config && profile != "default" { format!("profile {profile}") } else { profile.to_string() };
    ini_value(&text, &section, key)
}

/// The value of `key` in `[section]` of an INI text.
pub fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().to_string()).filter(|v| !v.is_empty());
                }
            }
        }
    }
    None
}

/// An object key from its URL form ("a%20b" is "a b").
pub(crate) fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("a bad %-escape in the key")?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the key is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_and_keys() {
        let t = "[default]\naws_access_key_id = A\n[profile x]\nregion=eu-west-1\n[x]\nregion = us-west-2\n";
        assert_eq!(ini_value(t, "default", "aws_access_key_id").as_deref(), Some("A"));
        assert_eq!(ini_value(t, "profile x", "region").as_deref(), Some("eu-west-1"));
        assert_eq!(ini_value(t, "x", "region").as_deref(), Some("us-west-2"));
        assert_eq!(ini_value(t, "y", "region"), None);
        assert_eq!(percent_decode("a%20b/c").unwrap(), "a b/c");
        assert!(percent_decode("a%2").is_err());
        assert!(percent_decode("a%zz").is_err());
    }
}
