//! Remote images against real servers started here on 127.0.0.1: nginx (http, and https with a
//! self-signed certificate), tests/remote/faulty_http.py (cuts answers short, answers 503,
//! stalls, resets, ignores Range) and moto's S3 server. `vdmount cat URL` must equal qemu-img's
//! raw conversion of the same local file (or the third-party manifest's hash), through faults
//! too; refusals and failures are one line naming the URL.

mod common;

use common::servers::{self, s3_put, Nginx};
use common::*;
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;

/// `vdmount cat ARGS URL` with `envs`: the SHA-256 of what it wrote, or its stderr; and its
/// stderr either way.
fn cat(url: &str, args: &[&str], envs: &[(&str, &str)]) -> (Result<String, String>, String) {
    let out = vdmount().arg("cat").args(args).arg(url).envs(envs.iter().copied()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "vdmount panicked on {url}: {err}");
    if out.status.success() {
        (Ok(sha256_hex(&out.stdout)), err)
    } else {
        (Err(err.clone()), err)
    }
}

/// The error line of a failed run (the last line; warnings about retries come before it): one
/// line, naming `url`.
fn error_line(err: &str, url: &str) -> String {
    let last = err.trim_end().lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("vdmount: ") && !last.contains("warning"), "no error line: {err}");
    assert!(last.contains(url), "the error does not name {url}: {last}");
    last
}

/// A folder of images made by qemu-img from one source disk, every format it writes, plus a
/// qcow2 child over a raw base (a chain by relative name); returns (name, qemu-img format).
fn make_images(dir: &Path) -> Vec<(String, Option<&'static str>)> {
    let src = dir.join("source.raw");
    make_source_disk(&src, 6 * MIB, 19);
    let s = src.to_str().unwrap();
    let mut names = vec![("source.raw".to_string(), Some("raw"))];
    let formats: &[(&str, &str, &[&str])] = &[
        ("disk.qcow2", "qcow2", &[]),
        ("zip.qcow2", "qcow2", &["-c"]),
        ("disk.vmdk", "vmdk", &[]),
        ("stream.vmdk", "vmdk", &["-o", "subformat=streamOptimized"]),
        ("disk.vhd", "vpc", &[]),
        ("fixed.vhd", "vpc", &["-o", "subformat=fixed"]),
        ("disk.vhdx", "vhdx", &[]),
        ("disk.vdi", "vdi", &[]),
        ("disk.qed", "qed", &[]),
        ("disk.hds", "parallels", &[]),
    ];
    for (name, fmt, opts) in formats {
        let out = dir.join(name);
        let mut args = vec!["convert", "-f", "raw", "-O", fmt];
        args.extend_from_slice(opts);
        args.extend([s, out.to_str().unwrap()]);
        qemu_img(&args);
        names.push((name.to_string(), Some(*fmt)));
    }
    // A chain: the child names its base "source.raw", relative, and changes two places.
    let top = dir.join("top.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-b", "source.raw", "-F", "raw", top.to_str().unwrap()]);
    qemu_io("qcow2", &top, &["write -P 0x5a 1M 64k", "write -P 0xa5 5M 8k"]);
    names.push(("top.qcow2".to_string(), Some("qcow2")));
    names
}

#[test]
fn every_format_and_a_chain_over_http_and_https_equal_qemu_img() {
    let dir = scratch();
    let images = make_images(dir.path());
    let nginx = Nginx::start(dir.path());
    let ca = nginx.ca.to_str().unwrap().to_string();
    for (name, fmt) in &images {
        let want = qemu_raw_sha256(&dir.path().join(name), *fmt);
        let (got, err) = cat(&nginx.http(name), &[], &[]);
        assert_eq!(got.as_deref(), Ok(want.as_str()), "http {name}: {err}");
        let (got, err) = cat(&nginx.https(name), &["--ca", &ca], &[]);
        assert_eq!(got.as_deref(), Ok(want.as_str()), "https {name}: {err}");
        println!("{name}: http and https equal qemu-img ({want})");
    }
    // SSL_CERT_FILE does what --ca does.
    let (got, err) = cat(&nginx.https("top.qcow2"), &[], &[("SSL_CERT_FILE", &ca)]);
    assert!(got.is_ok(), "SSL_CERT_FILE: {err}");
    // info names the chain by URL.
    let out = run_ok(vdmount().args(["info", &nginx.http("top.qcow2")]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&nginx.http("source.raw")), "info does not show the backing URL:\n{text}");
}

#[test]
fn third_party_ewf_and_dmg_over_http_equal_the_manifest() {
    let nginx_dir = scratch();
    let mut wanted = Vec::new();
    for case in third_party_cases().iter().filter(|c| c.case == "ewf-dfvfs-ext2" || c.case == "dmg-dfvfs-hfsplus-zlib")
    {
        let (_d, top) = unpack_case(case);
        std::fs::copy(&top, nginx_dir.path().join(&case.top_image)).unwrap();
        wanted.push((case.top_image.clone(), case.expected.clone()));
    }
    assert_eq!(wanted.len(), 2);
    let nginx = Nginx::start(nginx_dir.path());
    for (name, expected) in wanted {
        let (got, err) = cat(&nginx.http(&name), &[], &[]);
        let got = got.unwrap_or_else(|_| panic!("{name}: {err}"));
        assert!(expected.contains(&got), "{name}: got {got}, expected {expected:?}");
    }
}

#[test]
fn names_leaving_the_folder_are_refused() {
    let dir = scratch();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    make_source_disk(&dir.path().join("base.raw"), MIB, 3);
    let up = sub.join("up.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-u", "-b", "../base.raw", "-F", "raw", up.to_str().unwrap(), "1M"]);
    let local = sub.join("local.qcow2");
    let passwd = "/etc/passwd";
    qemu_img(&["create", "-f", "qcow2", "-u", "-b", passwd, "-F", "raw", local.to_str().unwrap(), "1M"]);
    let selfloop = sub.join("loop.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-u", "-b", "loop.qcow2", "-F", "qcow2", selfloop.to_str().unwrap(), "1M"]);
    let nginx = Nginx::start(dir.path());

    let url = nginx.http("sub/up.qcow2");
    let (got, err) = cat(&url, &[], &[]);
    assert!(got.is_err(), "../ out of the folder was followed");
    let line = error_line(&err, &url);
    assert!(line.contains("outside") && line.contains(&nginx.http("base.raw")), "{line}");
    println!("refused: {line}");
    let (got, err) = cat(&url, &["--allow-any-path"], &[]);
    assert_eq!(got.as_deref(), Ok(qemu_raw_sha256(&up, None).as_str()), "--allow-any-path: {err}");
    let (got, err) = cat(&url, &["--allow-dir", &nginx.http("")], &[]);
    assert!(got.is_ok(), "--allow-dir URL: {err}");

    // A local path is never followed from a remote image.
    for args in [&[][..], &["--allow-any-path"][..]] {
        let url = nginx.http("sub/local.qcow2");
        let (got, err) = cat(&url, args, &[]);
        assert!(got.is_err(), "{passwd} was followed with {args:?}");
        let line = error_line(&err, &url);
        assert!(line.contains("a path on this machine"), "{line}");
    }
    let url = nginx.http("sub/loop.qcow2");
    let (got, err) = cat(&url, &[], &[]);
    assert!(got.is_err());
    assert!(error_line(&err, &url).contains("loops"), "{err}");
}

#[test]
fn faults_are_retried_and_nothing_wrong_is_returned() {
    let dir = scratch();
    let images = make_images(dir.path());
    // Every fault that a retry mends, among good answers.
    let schedule = "ok,cut,ok,503,ok,reset,ok,stall,ok,ok";
    let server = servers::faulty(dir.path(), schedule, 3.0);
    let envs = [("VDMOUNT_HTTP_TIMEOUT_MS", "1000")];
    let mut warnings: Vec<String> = Vec::new();
    for (name, fmt) in images.iter().filter(|(n, _)| ["top.qcow2", "zip.qcow2", "disk.vhdx"].contains(&n.as_str())) {
        let url = format!("http://127.0.0.1:{}/{name}", server.port);
        let (got, err) = cat(&url, &[], &envs);
        let want = qemu_raw_sha256(&dir.path().join(name), *fmt);
        assert_eq!(got.as_deref(), Ok(want.as_str()), "{name} through faults: {err}");
        let retried: Vec<String> =
            err.lines().filter(|l| l.contains("warning") && l.contains("retry")).map(str::to_string).collect();
        assert!(!retried.is_empty(), "{name}: no retry was reported: {err}");
        let origin = format!("http://127.0.0.1:{}/", server.port);
        assert!(err.lines().all(|l| l.contains(&origin)), "a warning names no URL: {err}");
        println!("{name}: equal to qemu-img after {} retries", retried.len());
        warnings.extend(retried);
    }
    let origin = format!("http://127.0.0.1:{}", server.port);
    let faults: Vec<(String, String)> = servers::faults_seen(server)
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert!(f.len() == 4 && f[0] == "FAULT" && f[3].starts_with("bytes="), "a fault log line: {l:?}");
            (f[1].to_string(), format!("{origin}{} {}", f[2], f[3].replace('=', " ")))
        })
        .collect();
    let injected: Vec<&(String, String)> = faults.iter().filter(|(fault, _)| fault != "ok").collect();
    println!("{} requests, {} faults injected, {} retries", faults.len(), injected.len(), warnings.len());
    // Every injected fault was noticed and retried: a warning names its URL and range (the
    // first one-byte read of each image names the URL alone). One exception: a stall on a
    // read-ahead request (whole 1 MiB pieces) still waiting for its answer when cat had
    // everything it needed: cat exits without waiting out the timeout for bytes it never used.
    let mut unmatched = warnings.clone();
    let mut abandoned = 0;
    for (fault, request) in &injected {
        let (url, range) = request.split_once(" bytes ").unwrap();
        let pos = unmatched.iter().position(|w| {
            w.contains(&format!("{url} bytes {range}")) || (range == "0-0" && w.contains(&format!("{url}: ")))
        });
        match pos {
            Some(pos) => drop(unmatched.remove(pos)),
            None if fault == "stall" && is_readahead_piece(range) => abandoned += 1,
            None => panic!("{fault} on {request} went without a retry; warnings: {warnings:#?}"),
        }
    }
    // At most one stall in flight at the end of each of the three images.
    assert!(abandoned <= 3, "{abandoned} stalled read-ahead requests went without a retry: {warnings:#?}");
    // A retry nothing injected can only be a good answer that took longer than the 1 s timeout
    // on a loaded machine.
    for w in &unmatched {
        assert!(w.contains("timeout"), "a retry without a fault: {w}");
    }
}

/// Whether "FIRST-LAST" is a run of whole read-ahead pieces (REMOTE_PIECE_BYTES = 1 MiB).
fn is_readahead_piece(range: &str) -> bool {
    let Some((first, last)) = range.split_once('-') else { return false };
    let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
    first % MIB == 0 && (last + 1 - first) % MIB == 0
}

#[test]
fn failures_are_one_line_naming_the_url() {
    let dir = scratch();
    make_source_disk(&dir.path().join("d.raw"), MIB, 5);
    let envs = [("VDMOUNT_HTTP_TIMEOUT_MS", "1000")];
    for (schedule, needle) in [
        ("norange", "does not support range requests"),
        ("403", "access denied (HTTP 403)"),
        ("ok,badrange", "the server sent"),
        ("503", "HTTP 503; gave up after"),
    ] {
        let server = servers::faulty(dir.path(), schedule, 0.1);
        let url = format!("http://127.0.0.1:{}/d.raw", server.port);
        let (got, err) = cat(&url, &[], &envs);
        assert!(got.is_err(), "{schedule}: read anyway");
        let line = error_line(&err, &url);
        assert!(line.contains(needle), "{schedule}: {line}");
        println!("{schedule}: {line}");
    }
    let nginx = Nginx::start(dir.path());
    let url = nginx.http("missing.qcow2");
    assert!(error_line(&cat(&url, &[], &[]).1, &url).contains("not found (HTTP 404)"));
    // A certificate nobody vouches for.
    let url = nginx.https("d.raw");
    let line = error_line(&cat(&url, &[], &[]).1, &url);
    assert!(line.contains("TLS") && line.contains("--ca"), "{line}");
    // Nothing listens there: refused connections are retried, then fail.
    let url = format!("http://127.0.0.1:{}/d.raw", servers::free_port());
    assert!(error_line(&cat(&url, &[], &envs).1, &url).contains("gave up"));
}

#[test]
fn s3_objects_and_a_chain_within_the_prefix() {
    let dir = scratch();
    let images = make_images(dir.path());
    let moto = servers::moto();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let path = |n: &str| dir.path().join(n);
    let (top, base, qcow) = (path("top.qcow2"), path("source.raw"), path("disk.vhdx"));
    s3_put(&endpoint, "images", &[("vm/top.qcow2", &top), ("vm/source.raw", &base), ("vm/disk.vhdx", &qcow)]);
    // A child in another prefix naming its base "../vm/source.raw".
    let other = path("other.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-u", "-b", "../vm/source.raw", "-F", "raw", other.to_str().unwrap(), "6M"]);
    s3_put(&endpoint, "images2", &[]);
    let envs = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    run_ok(
        Command::new("python3").arg("-c").arg(format!(
            "import boto3\nboto3.client('s3', endpoint_url={endpoint:?}, region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test').upload_file({:?}, 'images', 'other/other.qcow2')",
            other.display().to_string()
        )),
    );
    for (name, fmt) in images.iter().filter(|(n, _)| ["top.qcow2", "disk.vhdx"].contains(&n.as_str())) {
        let url = format!("s3://images/vm/{name}");
        let (got, err) = cat(&url, &[], &envs);
        let want = qemu_raw_sha256(&path(name), *fmt);
        assert_eq!(got.as_deref(), Ok(want.as_str()), "{url}: {err}");
        println!("{url}: equal to qemu-img");
    }
    // Credentials from a profile in a credentials file instead of the environment.
    let creds = dir.path().join("aws-credentials");
    std::fs::write(&creds, "[ci]\naws_access_key_id = test\naws_secret_access_key = test\n").unwrap();
    let envs2 = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_PROFILE", "ci"),
        ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
        ("AWS_REGION", "us-east-1"),
    ];
    let (got, err) = cat("s3://images/vm/top.qcow2", &[], &envs2);
    assert!(got.is_ok(), "profile credentials: {err}");
    // Out of the prefix: refused; a missing key: one line.
    let url = "s3://images/other/other.qcow2";
    let (got, err) = cat(url, &[], &envs);
    assert!(got.is_err(), "left its prefix");
    assert!(error_line(&err, url).contains("outside s3://images/other/"), "{err}");
    let (got, err) = cat(url, &["--allow-any-path"], &envs);
    assert!(got.is_ok(), "--allow-any-path: {err}");
    let url = "s3://images/vm/nothing.qcow2";
    assert!(error_line(&cat(url, &[], &envs).1, url).contains("HTTP 404"));
}

#[test]
fn cache_dir_reads_nothing_twice_and_checks_what_it_kept() {
    let dir = scratch();
    let images = make_images(dir.path());
    let cache = scratch();
    let c = cache.path().to_str().unwrap();
    for (name, fmt) in images.iter().filter(|(n, _)| ["top.qcow2", "stream.vmdk"].contains(&n.as_str())) {
        let want = qemu_raw_sha256(&dir.path().join(name), *fmt);
        let mut requests = Vec::new();
        let port = servers::free_port();
        for round in 0..3 {
            if round == 2 {
                // Damage every kept chunk's first byte: each must be fetched again, not used.
                for e in std::fs::read_dir(cache.path()).unwrap() {
                    let p = e.unwrap().path();
                    if p.extension().is_some_and(|x| x == "data") {
                        let mut d = std::fs::read(&p).unwrap();
                        for i in (0..d.len()).step_by(1 << 20) {
                            d[i] ^= 0xff;
                        }
                        std::fs::write(&p, d).unwrap();
                    }
                }
            }
            let server = servers::faulty_at(port, dir.path(), "ok", 1.0);
            let url = format!("http://127.0.0.1:{}/{name}", server.port);
            let (got, err) = cat(&url, &["--cache-dir", c], &[]);
            assert_eq!(got.as_deref(), Ok(want.as_str()), "{name} round {round}: {err}");
            requests.push(servers::faults_seen(server).len());
        }
        println!("{name}: requests with an empty cache, a full one, a damaged one: {requests:?}");
        // A full cache: one request per layer, to check its size and ETag.
        let layers = if name == "top.qcow2" { 2 } else { 1 };
        assert_eq!(requests[1], layers, "{name}: the second read fetched again");
        assert!(requests[0] > layers && requests[2] > layers, "{name}: {requests:?}");
    }
}

/// (fault, first byte, bytes) of each request a faulty server logged.
fn requests_seen(server: servers::Server) -> Vec<(String, u64, u64)> {
    servers::faults_seen(server)
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (first, last) = f.get(3)?.strip_prefix("bytes=")?.split_once('-')?;
            let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
            Some((f[1].to_string(), first, last - first + 1))
        })
        .collect()
}

#[test]
fn sequential_reads_are_read_ahead_once_and_random_reads_fetch_only_what_they_read() {
    let dir = scratch();
    let size = 24 * MIB;
    let raw = dir.path().join("d.raw");
    make_source_disk(&raw, size, 23);
    let want = sha256_file(&raw);
    // Sequential, through faults the read-ahead's background fetches must retry and warn about.
    let server = servers::faulty(dir.path(), "ok,ok,ok,503,ok,ok,cut", 1.0);
    let url = format!("http://127.0.0.1:{}/d.raw", server.port);
    let (got, err) = cat(&url, &[], &[]);
    assert_eq!(got.as_deref(), Ok(want.as_str()), "{err}");
    let seen = requests_seen(server);
    let faults = seen.iter().filter(|(f, _, _)| f != "ok").count();
    let retries = err.lines().filter(|l| l.contains("warning") && l.contains("retry")).count();
    assert!(faults > 0 && retries == faults, "{faults} faults, {retries} retries: {err}");
    // Each byte came once (the read-ahead is not fetched twice by cat's readers), apart from
    // the format probe's small reads.
    let fetched: u64 = seen.iter().filter(|(f, _, _)| f == "ok").map(|r| r.2).sum();
    println!("sequential: {} requests, {fetched} bytes fetched for {size}", seen.len());
    assert!(fetched >= size && fetched <= size + MIB, "{fetched} bytes fetched for {size}: {seen:?}");

    // Random 4 KiB reads at QD1, in this process: each asks for its 4 KiB and nothing ahead.
    let server = servers::faulty(dir.path(), "ok", 1.0);
    let url = format!("http://127.0.0.1:{}/d.raw", server.port);
    let opts = vdmount::formats::OpenOptions::new(vdmount::cache::Cache::new(16 << 20));
    let disk = vdmount::formats::open(Path::new(&url), &opts).unwrap();
    let data = std::fs::read(&raw).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let reads = 150;
    for _ in 0..reads {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = x % (size / 4096) * 4096;
        let mut buf = vec![0u8; 4096];
        disk.read_at(&mut buf, at).unwrap();
        assert!(buf == data[at as usize..at as usize + 4096], "random read at {at} differs from the file");
    }
    drop(disk);
    // The open's probes are small (header, footer); every read after is one 4 KiB request.
    let seen = requests_seen(server);
    let (probes, fetches): (Vec<_>, Vec<_>) = seen.iter().partition(|r| r.2 < 4096);
    println!("random: {} requests at open, {} for {reads} reads", probes.len(), fetches.len());
    assert_eq!(fetches.len(), reads, "{seen:?}");
    assert!(fetches.iter().all(|r| r.2 == 4096), "a random read fetched more than it read: {seen:?}");
}

#[test]
fn sequential_cat_with_cache_dir_fetches_each_byte_once_and_a_second_cat_nothing() {
    let dir = scratch();
    let size = 24 * MIB;
    let raw = dir.path().join("d.raw");
    make_source_disk(&raw, size, 29);
    let want = sha256_file(&raw);
    let cache = scratch();
    let c = cache.path().to_str().unwrap();
    let port = servers::free_port();
    let mut fetched = Vec::new();
    for round in 0..2 {
        let server = servers::faulty_at(port, dir.path(), "ok", 1.0);
        let url = format!("http://127.0.0.1:{}/d.raw", server.port);
        let (got, err) = cat(&url, &["--cache-dir", c], &[]);
        assert_eq!(got.as_deref(), Ok(want.as_str()), "round {round}: {err}");
        let seen = requests_seen(server);
        // The open's 1-byte probe (size and ETag) is asked for every time; count the rest.
        let bytes: u64 = seen.iter().filter(|r| r.2 > 1).map(|r| r.2).sum();
        println!("round {round}: {} requests, {bytes} bytes fetched for {size}", seen.len());
        assert!(round == 0 || seen.iter().all(|r| r.2 == 1), "the second cat fetched again: {seen:?}");
        // The read-ahead asks for runs of pieces in one request; a caller's own fetch never
        // asks for more than one piece.
        assert!(round == 1 || seen.iter().any(|r| r.2 > MIB), "nothing was read ahead: {seen:?}");
        fetched.push(bytes);
    }
    // Read ahead and kept: every byte once (the read-ahead and cat's readers never fetched
    // the same chunk twice).
    assert_eq!(fetched, [size, 0]);
}

/// Sockets of this machine in TIME_WAIT towards 127.0.0.1:`port` (/proc/net/tcp): one for
/// each connection to it the client closed.
fn closed_connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(2) == Some(remote.as_str()))
        .filter(|l| l.split_whitespace().nth(3) == Some("06"))
        .count()
}

#[test]
fn sequential_reads_reuse_their_connections() {
    let dir = scratch();
    let size = 64 * MIB;
    let raw = dir.path().join("d.raw");
    make_source_disk(&raw, size, 31);
    let want = sha256_file(&raw);
    let server = servers::faulty(dir.path(), "ok", 1.0);
    let port = server.port;
    let url = format!("http://127.0.0.1:{port}/d.raw");
    // Left by an earlier server on the same port number, if any.
    let before = closed_connections_to(port);
    let (got, err) = cat(&url, &[], &[]);
    assert_eq!(got.as_deref(), Ok(want.as_str()), "{err}");
    let closed = closed_connections_to(port).saturating_sub(before);
    let requests = servers::faults_seen(server).len();
    println!("{requests} requests over {closed} connections");
    // The read-ahead's threads and cat's own reads: a connection each at most, kept in the
    // pool between requests (not one connection per request).
    assert!(requests > 20 && closed <= 12, "{requests} requests over {closed} connections");
}
