//! Range requests over HTTP(S): one shared client (ureq, blocking, rustls) whose connection
//! pool every layer and worker thread uses, and one request checked byte for byte: a 206 whose
//! Content-Range is exactly the range asked for, a body of exactly that length, the same ETag
//! as at open. Anything else is retried (resets, stalls, short bodies, 5xx, 429) with backoff,
//! or is a one-line error naming the URL (403, 404, no Range support, TLS).

use super::resolver::CachedResolver;
use crate::limits::{
    REMOTE_ATTEMPTS, REMOTE_BACKOFF_MAX_MS, REMOTE_BACKOFF_MS, REMOTE_MAX_HEADER_BYTES, REMOTE_PARALLEL,
    REMOTE_TIMEOUT_MS,
};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use ureq::Agent;

/// How the client is set up (`--ca`), fixed before the first remote image is opened.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// PEM file of the certificate authorities to trust instead of the built-in roots.
    pub ca: Option<PathBuf>,
    /// `--cache-dir`: where fetched chunks are kept (disk_cache.rs).
    pub cache_dir: Option<PathBuf>,
}

static OPTIONS: OnceLock<ClientOptions> = OnceLock::new();
static AGENT: OnceLock<Result<Agent, String>> = OnceLock::new();
/// Requests retried in this process (reported by the tests and in the server's log).
pub static RETRIES: AtomicU64 = AtomicU64::new(0);

/// Sets the client's options; only the first call counts.
pub fn configure(opts: ClientOptions) {
    let _ = OPTIONS.set(opts);
}

/// The process's one client.
pub fn agent() -> Result<&'static Agent, String> {
    AGENT.get_or_init(build_agent).as_ref().map_err(Clone::clone)
}

/// The `--cache-dir` folder, if one was given.
pub fn cache_dir() -> Option<PathBuf> {
    OPTIONS.get().and_then(|o| o.cache_dir.clone())
}

fn timeout() -> Duration {
    let ms = std::env::var("VDMOUNT_HTTP_TIMEOUT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(REMOTE_TIMEOUT_MS);
    Duration::from_millis(ms.max(1))
}

fn build_agent() -> Result<Agent, String> {
    let opts = OPTIONS.get().cloned().unwrap_or_default();
    let ca = opts.ca.or_else(|| std::env::var_os("SSL_CERT_FILE").map(PathBuf::from));
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = ca {
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&read_ca(&ca)?));
    }
    let t = timeout();
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_response_header_size(REMOTE_MAX_HEADER_BYTES)
        .max_idle_connections(4 * REMOTE_PARALLEL)
        .max_idle_connections_per_host(2 * REMOTE_PARALLEL)
        .timeout_connect(Some(t))
        .timeout_recv_response(Some(t))
        .timeout_recv_body(Some(t * 4))
        .user_agent(concat!("vdmount/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build())
        .build();
    let connector = ureq::unversioned::transport::DefaultConnector::new();
    Ok(Agent::with_parts(config, connector, CachedResolver::default()))
}

fn read_ca(path: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read the CA file: {e}", path.display()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in the CA file", path.display()));
    }
    Ok(certs)
}

/// Why one request did not give the bytes.
pub enum Failure {
    /// Worth trying again: a reset, a stall, a short body, 5xx, 429.
    Retry(String),
    /// Not: trying again would get the same answer.
    Fatal(String),
    /// Fatal too, and the object is not there (404, 410; S3's NoSuchKey is a 404): readers
    /// probing for a file (EWF segments) tell it apart from one that cannot be read.
    NotFound(String),
}

/// What a good answer told about the object.
pub struct Answer {
    /// The object's size, from Content-Range.
    pub total: u64,
    pub etag: Option<String>,
}

/// GETs the bytes at `offset` of `url` into `bufs`, one after the other (one request for
/// several read-ahead pieces), once.
pub fn get_range(agent: &Agent, url: &str, offset: u64, bufs: &mut [&mut [u8]]) -> Result<Answer, Failure> {
    let total_len: usize = bufs.iter().map(|b| b.len()).sum();
    let last = offset + total_len as u64 - 1;
    let mut resp = agent
        .get(url)
        .header("Range", format!("bytes={offset}-{last}"))
        .header("Accept-Encoding", "identity")
        .call()
        .map_err(transport_failure)?;
    let status = resp.status().as_u16();
    match status {
        206 => {}
        200 => {
            return Err(Failure::Fatal(
                "the server does not support range requests (it answered a Range request with the whole file); vdmount reads remote images by ranges".into(),
            ))
        }
        401 | 403 => return Err(Failure::Fatal(format!("access denied (HTTP {status}){}", s3_hint(&mut resp)))),
        404 | 410 => return Err(Failure::NotFound(format!("not found (HTTP {status})"))),
        416 => return Err(Failure::Fatal("range not satisfiable (HTTP 416): the file is empty or shrank".into())),
        408 | 429 | 500..=599 => return Err(Failure::Retry(format!("HTTP {status}"))),
        _ => return Err(Failure::Fatal(format!("unexpected answer HTTP {status} to a range request"))),
    }
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let range = header("content-range").ok_or_else(|| Failure::Fatal("a 206 answer without Content-Range".into()))?;
    let (first, end, total) = parse_content_range(&range)
        .ok_or_else(|| Failure::Fatal(format!("a Content-Range vdmount cannot read: {range:?}")))?;
    // Some servers (busybox httpd) send from the start asked for to the end of the file: the
    // bytes wanted are its head, and the rest is left unread (the connection is then dropped).
    if first != offset || end < last {
        return Err(Failure::Fatal(format!("asked for bytes {offset}-{last}, the server sent {range:?}")));
    }
    if let Some(len) = header("content-length") {
        if len.trim().parse::<u64>().ok() != Some(end - first + 1) {
            return Err(Failure::Retry(format!("Content-Length {len} for {range:?}")));
        }
    }
    let etag = header("etag");
    let mut body = resp.body_mut().as_reader();
    let mut before = 0;
    for buf in bufs.iter_mut() {
        let mut got = 0;
        while got < buf.len() {
            let done = before + got;
            match body.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(Failure::Retry(format!("the answer was cut short after {done} of {total_len} bytes")))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Failure::Retry(format!("the answer broke off after {done} of {total_len} bytes: {e}")))
                }
            }
        }
        before += got;
    }
    // ureq puts the connection back in its pool only once a read has seen the body's end:
    // without this read every request would open a new connection (and start slow again).
    if end == last {
        let _ = body.read(&mut [0u8; 1]);
    }
    Ok(Answer { total, etag })
}

/// S3 explains a refusal in its XML body: a short look at it helps (wrong key, clock skew).
fn s3_hint(resp: &mut ureq::http::Response<ureq::Body>) -> String {
    let Ok(text) = resp.body_mut().with_config().limit(4096).read_to_string() else { return String::new() };
    let code = text.split("<Code>").nth(1).and_then(|s| s.split("</Code>").next());
    code.filter(|c| c.len() < 100 && c.chars().all(|ch| ch.is_ascii_alphanumeric()))
        .map(|c| format!(": {c}"))
        .unwrap_or_default()
}

fn transport_failure(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => {
            Failure::Fatal(format!("TLS failed: {e} (for a private CA pass --ca FILE or set SSL_CERT_FILE)"))
        }
        ureq::Error::HostNotFound => Failure::Fatal("the host name does not resolve".into()),
        ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::InvalidProxyUrl => {
            Failure::Fatal(format!("not a URL vdmount can request: {e}"))
        }
        ureq::Error::LargeResponseHeader(..) => Failure::Fatal(format!("{e}")),
        // rustls reports a refused certificate or handshake as invalid data on the socket.
        ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::InvalidData => {
            Failure::Fatal(format!("TLS failed: {io} (for a private CA pass --ca FILE or set SSL_CERT_FILE)"))
        }
        e => Failure::Retry(e.to_string()),
    }
}

/// "bytes FIRST-LAST/TOTAL" (TOTAL may not be "*": vdmount needs the size).
pub fn parse_content_range(s: &str) -> Option<(u64, u64, u64)> {
    let rest = s.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.trim().split_once('-')?;
    let num = |t: &str| -> Option<u64> {
        let t = t.trim();
        (!t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok()).flatten()
    };
    let (first, last, total) = (num(first)?, num(last)?, num(total)?);
    (first <= last && last < total).then_some((first, last, total))
}

/// Runs `attempt` until it succeeds, fails fatally, or the retry budget is spent; `what` names
/// the URL and range in the warnings and the final error.
pub fn with_retries<T>(what: &str, mut attempt: impl FnMut() -> Result<T, Failure>) -> Result<T, String> {
    let mut pause = REMOTE_BACKOFF_MS;
    for n in 1..=REMOTE_ATTEMPTS {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(why) | Failure::NotFound(why)) => return Err(why),
            Err(Failure::Retry(why)) if n == REMOTE_ATTEMPTS => {
                return Err(format!("{why}; gave up after {REMOTE_ATTEMPTS} tries"))
            }
            Err(Failure::Retry(why)) => {
                RETRIES.fetch_add(1, Ordering::Relaxed);
                eprintln!("vdmount: warning: {what}: {why}; retry {n} of {} in {pause} ms", REMOTE_ATTEMPTS - 1);
                std::thread::sleep(Duration::from_millis(pause));
                pause = (pause * 2).min(REMOTE_BACKOFF_MAX_MS);
            }
        }
    }
    unreachable!("the loop returns on its last attempt")
}

#[cfg(test)]
mod tests {
    use super::parse_content_range as p;

    #[test]
    fn content_range() {
        assert_eq!(p("bytes 0-0/10"), Some((0, 0, 10)));
        assert_eq!(p("bytes 5-9/10"), Some((5, 9, 10)));
        assert_eq!(p("bytes 5-10/10"), None);
        assert_eq!(p("bytes 5-4/10"), None);
        assert_eq!(p("bytes 0-0/*"), None);
        assert_eq!(p("bytes -1-0/10"), None);
        assert_eq!(p("bytes 0-0/99999999999999999999999"), None);
        assert_eq!(p("items 0-0/10"), None);
    }
}
