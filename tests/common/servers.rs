//! Real servers for the remote tests, started on 127.0.0.1 by the test and killed on drop:
//! nginx (http and https, with a self-signed certificate made by openssl), moto's S3 server,
//! and tests/remote/faulty_http.py (a file server that misbehaves on purpose).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts connections on `port`, or panics naming `what`.
fn wait_for(port: u16, what: &str, child: &mut Child) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {port}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what} did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (and reaped) on drop.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// nginx serving `root` over http on `.http.port` and https on `.https_port`; `.ca` is the
/// self-signed certificate to trust (for 127.0.0.1 and localhost).
pub struct Nginx {
    pub server: Server,
    pub https_port: u16,
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(root: &Path) -> Nginx {
        Nginx::start_with(root, "")
    }

    /// `start`, with `extra` directives in the server block (e.g. "autoindex on;" or an
    /// access_log to count requests).
    pub fn start_with(root: &Path, extra: &str) -> Nginx {
        let dir = tempfile::Builder::new().prefix("vdmount-nginx-").tempdir().unwrap();
        let d = dir.path();
        // A CA, and a certificate for 127.0.0.1 and localhost that it signs.
        let (ca, cert, key) = (d.join("ca.pem"), d.join("cert.pem"), d.join("key.pem"));
        let openssl = |args: &[&str]| {
            super::run_ok(Command::new("openssl").current_dir(d).args(args).stderr(Stdio::null()));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=vdmount test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.csr",
        ]);
        std::fs::write(
            d.join("ext.cnf"),
            "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "cert.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ]);
        let (http, https) = (free_port(), free_port());
        let p = |x: &str| d.join(x).display().to_string();
        let conf = format!(
            "daemon off; master_process off; error_log {err}; pid {pid};\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; log_format ranges '$request $http_range'; client_body_temp_path {t}; proxy_temp_path {t}; fastcgi_temp_path {t};\n\
             uwsgi_temp_path {t}; scgi_temp_path {t}; keepalive_requests 100000;\n\
             server {{ listen 127.0.0.1:{http}; listen 127.0.0.1:{https} ssl; root {root};\n\
             ssl_certificate {cert}; ssl_certificate_key {key}; {extra} }} }}\n",
            err = p("error.log"),
            pid = p("nginx.pid"),
            t = p("tmp"),
            root = root.display(),
            cert = cert.display(),
            key = key.display(),
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(d)
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx-light; tests/vm/setup-host.sh does)");
        let mut server = Server { child, port: http };
        wait_for(http, "nginx", &mut server.child);
        wait_for(https, "nginx (https)", &mut server.child);
        Nginx { server, https_port: https, ca, _dir: dir }
    }

    pub fn http(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.server.port)
    }

    pub fn https(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.https_port)
    }
}

/// tests/remote/faulty_http.py serving `root` with the fault `schedule` (see the script).
/// Its standard output (one FAULT line per request) is captured.
pub fn faulty(root: &Path, schedule: &str, stall_secs: f64) -> Server {
    faulty_at(free_port(), root, schedule, stall_secs)
}

/// `faulty` on a given port (to serve the same URLs again after a restart).
pub fn faulty_at(port: u16, root: &Path, schedule: &str, stall_secs: f64) -> Server {
    let child = Command::new("python3")
        .arg(super::repo().join("tests/remote/faulty_http.py"))
        .arg(root)
        .arg(port.to_string())
        .arg(schedule)
        .arg(stall_secs.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut s = Server { child, port };
    wait_for(port, "faulty_http.py", &mut s.child);
    s
}

/// The FAULT lines a faulty server printed so far, after it is stopped.
pub fn faults_seen(mut s: Server) -> Vec<String> {
    use std::io::Read;
    let _ = s.child.kill();
    let _ = s.child.wait();
    let mut out = String::new();
    if let Some(mut o) = s.child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    out.lines().map(str::to_string).collect()
}

/// moto's S3 server (python3 -m moto.server).
pub fn moto() -> Server {
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m moto.server (pip install 'moto[server]'; tests/vm/setup-host.sh does)");
    let mut s = Server { child, port };
    wait_for(port, "moto.server", &mut s.child);
    s
}

/// boto3 (moto's own dependency) creates `bucket` on the moto server at `endpoint` and puts
/// `files` (key, local file) into it.
pub fn s3_put(endpoint: &str, bucket: &str, files: &[(&str, &Path)]) {
    let puts: String = files
        .iter()
        .map(|(key, path)| format!("s3.upload_file({:?}, {bucket:?}, {key:?})\n", path.display().to_string()))
        .collect();
    let script = format!(
        "import boto3\ns3 = boto3.client('s3', endpoint_url={endpoint:?}, region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\ns3.create_bucket(Bucket={bucket:?})\n{puts}"
    );
    super::run_ok(Command::new("python3").arg("-c").arg(script));
}

/// The requests nginx logged to `log` with `access_log LOG ranges;` in `Nginx::start_with`'s
/// extra: "GET /path HTTP/1.1 bytes=0-0" (the Range header last, "-" if none).
pub fn requests_logged(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}
