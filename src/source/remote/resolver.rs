//! Host names resolved once, at open, and remembered: the sandboxed server cannot read
//! /etc/resolv.conf or talk to a DNS server, but its pool must still open new connections
//! (after a reset, or when more requests run at once). Resolution here is synchronous, so the
//! client starts no thread of its own (a background server is forked after the open).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

#[derive(Debug, Default)]
pub struct CachedResolver {
    known: Mutex<HashMap<String, Vec<SocketAddr>>>,
}

impl Resolver for CachedResolver {
    fn resolve(&self, uri: &Uri, _config: &Config, _timeout: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or_else(|| ureq::Error::BadUri(uri.to_string()))?;
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        // An IPv6 literal keeps its brackets in the URI.
        let key = format!("{}:{port}", host);
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if !known.contains_key(&key) {
            let addrs: Vec<SocketAddr> = key.to_socket_addrs().map_err(|_| ureq::Error::HostNotFound)?.collect();
            if addrs.is_empty() {
                return Err(ureq::Error::HostNotFound);
            }
            known.insert(key.clone(), addrs);
        }
        let mut out = self.empty();
        for a in known[&key].iter().take(16) {
            out.push(*a);
        }
        Ok(out)
    }
}
