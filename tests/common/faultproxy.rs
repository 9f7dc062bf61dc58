//! A fault-injecting HTTP proxy on 127.0.0.1, between songfs and a real S3 server
//! (s3s-fs), so tests can make the store fail the way real ones do: 500/503/`SlowDown`
//! answers, a GET body that stops half-way or stalls without closing, a server that
//! ignores `Range` (answers 200 with the whole object), a PUT cut off mid-upload, and a black hole (accepts, reads, never
//! answers).
//!
//! One request per connection: the proxy answers with `Connection: close`, so it never
//! has to frame a second request on a kept-alive connection. Each rule applies to the
//! requests it matches, a given number of times, in order; everything else passes
//! through untouched. Every request is logged (method, path, what was done) for the test
//! to check. Threads end when the proxy is dropped: stalled and black-holed connections
//! are closed then.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer with this status and S3 error code (e.g. 503 "SlowDown"), never forwarding.
    Status(u16, &'static str),
    /// Forward, but close the connection after this many bytes of the response body.
    CutBody(usize),
    /// Forward this many bytes of the response body, then send nothing more (open).
    Stall(usize),
    /// Answer 200 with these bytes (the whole object), as a server that ignores `Range`
    /// does. Not forwarded: the request's signature covers its `Range` header.
    WholeObject(Arc<Vec<u8>>),
    /// Read this many bytes of the request body, then close without answering.
    CutUpload(usize),
    /// Read the request, never answer, keep the connection open.
    BlackHole,
}

#[derive(Clone, Debug)]
pub struct Rule {
    /// "GET", "PUT", ... or "" for any.
    pub method: &'static str,
    /// A substring of the request path (with the query), "" for any.
    pub path_contains: String,
    pub fault: Fault,
    /// How many matching requests get the fault (usize::MAX: all).
    pub times: usize,
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub fault: Option<Fault>,
}

struct Shared {
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Logged>>,
    stop: AtomicBool,
    upstream: u16,
}

pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy to the server listening on 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            upstream,
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || {
                            let _ = serve(&s, conn);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FaultProxy { port, shared }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a rule after the ones already there.
    pub fn add(&self, method: &'static str, path_contains: &str, fault: Fault, times: usize) {
        self.shared.rules.lock().unwrap().push(Rule {
            method,
            path_contains: path_contains.to_string(),
            fault,
            times,
        });
    }

    /// Removes every rule: everything passes again (open stalls stay stalled).
    pub fn heal(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    pub fn log(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The logged requests whose path contains `needle`.
    pub fn requests_to(&self, needle: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.path.contains(needle))
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// The request head (up to and with the blank line) and whatever body bytes came with it.
fn read_head(conn: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return Ok((head, buf[end + 4..].to_vec()));
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The fault for this request, if a rule matches (and counts it).
fn fault_for(s: &Shared, method: &str, path: &str) -> Option<Fault> {
    let mut rules = s.rules.lock().unwrap();
    let rule = rules.iter_mut().find(|r| {
        r.times > 0
            && (r.method.is_empty() || r.method == method)
            && path.contains(r.path_contains.as_str())
    })?;
    rule.times = rule.times.saturating_sub(1);
    Some(rule.fault.clone())
}

/// Holds a connection open, sending nothing, until the proxy stops.
fn hold(s: &Shared, conn: &TcpStream) {
    while !s.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = conn.shutdown(Shutdown::Both);
}

fn serve(s: &Shared, mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    let (head, mut body) = read_head(&mut conn)?;
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let fault = fault_for(s, &method, &path);
    s.log.lock().unwrap().push(Logged {
        at: Instant::now(),
        method: method.clone(),
        path: path.clone(),
        fault: fault.clone(),
    });
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    match &fault {
        Some(Fault::BlackHole) => {
            hold(s, &conn);
            return Ok(());
        }
        Some(Fault::CutUpload(n)) => {
            let mut chunk = vec![0u8; 64 * 1024];
            while body.len() < (*n).min(length) {
                let got = conn.read(&mut chunk)?;
                if got == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..got]);
            }
            return conn.shutdown(Shutdown::Both);
        }
        Some(Fault::WholeObject(bytes)) => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            )?;
            // The client may hang up once it has its range: that is its right.
            let _ = conn.write_all(bytes);
            return conn.shutdown(Shutdown::Both);
        }
        Some(Fault::Status(code, s3_code)) => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3_code}</Code>\
                 <Message>injected by the test's fault proxy</Message></Error>"
            );
            write!(
                conn,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            )?;
            return conn.shutdown(Shutdown::Write);
        }
        _ => {}
    }
    // The whole request body, then one request upstream.
    let mut chunk = vec![0u8; 64 * 1024];
    while body.len() < length {
        let got = conn.read(&mut chunk)?;
        if got == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..got]);
    }
    let mut up = TcpStream::connect(("127.0.0.1", s.upstream))?;
    let mut lines = head.trim_end().lines();
    let mut out = format!("{}\r\n", lines.next().unwrap_or(""));
    for l in lines {
        let name = l.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("connection") {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(&body)?;
    // The response: its head with `Connection: close`, then the body, maybe cut or stalled.
    let (rhead, mut rbody) = read_head(&mut up)?;
    let mut lines = rhead.trim_end().lines();
    let mut out = format!("{}\r\n", lines.next().unwrap_or(""));
    for l in lines {
        if !l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("connection")
        {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    conn.write_all(out.as_bytes())?;
    let limit = match fault {
        Some(Fault::CutBody(n)) | Some(Fault::Stall(n)) => n,
        _ => usize::MAX,
    };
    let mut sent = 0usize;
    loop {
        if rbody.is_empty() {
            let got = up.read(&mut chunk)?;
            if got == 0 {
                break;
            }
            rbody.extend_from_slice(&chunk[..got]);
        }
        let take = rbody.len().min(limit - sent);
        conn.write_all(&rbody[..take])?;
        sent += take;
        rbody.drain(..take);
        if sent == limit {
            if let Some(Fault::Stall(_)) = fault {
                hold(s, &conn);
                return Ok(());
            }
            break;
        }
    }
    conn.shutdown(Shutdown::Both)
}
