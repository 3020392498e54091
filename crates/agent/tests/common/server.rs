//! A deliberately misbehaving HTTP/1.1 image server for tests: it serves one body on
//! 127.0.0.1, honours (or ignores) `Range` (`bytes=N-` and `bytes=N-M`), records every request's `Range` header, and
//! applies scripted faults to successive responses: cut the body short, reset the
//! connection, stall, answer an error status. It can also announce a wrong length.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What to do to one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Send this many body bytes, then close cleanly (Content-Length promised more).
    Truncate(usize),
    /// Send this many body bytes, then reset the connection (RST).
    Reset(usize),
    /// Send this many body bytes, then send nothing until the client gives up.
    Stall(usize),
    /// Answer with this status and no body.
    Status(u16),
}

/// Everything the server does, changeable while it runs.
#[derive(Default)]
pub(crate) struct Script {
    /// The body served.
    pub body: Arc<Vec<u8>>,
    /// Faults for the next responses, in order; none left: serve normally.
    pub faults: VecDeque<Fault>,
    /// Applied to every response once `faults` is empty.
    pub always: Option<Fault>,
    /// Serve 200 with the whole body even for Range requests.
    pub ignore_range: bool,
    /// Announce this many bytes more than exist.
    pub extra_length: u64,
    /// `Range` header of every request (None: no Range).
    pub requests: Vec<Option<String>>,
    /// Flip this body byte in the next response that carries it (then forget it).
    pub flip_once: Option<usize>,
    /// Body bytes sent, all responses together.
    pub sent: u64,
}

/// A running server.
pub(crate) struct ImageServer {
    pub addr: SocketAddr,
    pub script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ImageServer {
    /// Serve `body` at any path.
    pub(crate) async fn start(body: Vec<u8>) -> ImageServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(Script {
            body: Arc::new(body),
            ..Default::default()
        }));
        let s = script.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(handle(sock, s.clone()));
            }
        });
        ImageServer { addr, script, task }
    }

    /// URL of the image.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/image", self.addr)
    }

    /// Edit the script.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R {
        f(&mut self.script.lock().unwrap())
    }

    /// `Range` headers seen so far.
    pub(crate) fn requests(&self) -> Vec<Option<String>> {
        self.with(|s| s.requests.clone())
    }
}

async fn handle(mut sock: TcpStream, script: Arc<Mutex<Script>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let range = text.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("range"))
            .map(|(_, v)| v.trim().to_string())
    });
    let (body, fault, ignore_range, extra, flip) = {
        let mut s = script.lock().unwrap();
        s.requests.push(range.clone());
        let fault = s.faults.pop_front().or(s.always);
        (
            s.body.clone(),
            fault,
            s.ignore_range,
            s.extra_length,
            s.flip_once,
        )
    };
    if let Some(Fault::Status(code)) = fault {
        let msg =
            format!("HTTP/1.1 {code} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = sock.write_all(msg.as_bytes()).await;
        return;
    }
    let total = body.len() as u64 + extra;
    // `bytes=N-` or `bytes=N-M` (M inclusive, clamped to the body).
    let asked = range
        .as_deref()
        .filter(|_| !ignore_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(n, m)| Some((n.parse::<u64>().ok()?, m.parse::<u64>().ok())));
    let start = asked.map(|(n, _)| n);
    let last = asked
        .and_then(|(_, m)| m)
        .map_or(total.saturating_sub(1), |m| m.min(total.saturating_sub(1)));
    let (status_line, from) = match start {
        Some(n) if n >= total => {
            let msg = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = sock.write_all(msg.as_bytes()).await;
            return;
        }
        Some(n) => (
            format!("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{last}/{total}\r\n"),
            n,
        ),
        None => ("HTTP/1.1 200 OK\r\nAccept-Ranges: bytes\r\n".to_string(), 0),
    };
    let from = (from as usize).min(body.len());
    let end = if start.is_some() { last + 1 } else { total };
    let header = format!(
        "{status_line}Content-Length: {}\r\nConnection: close\r\n\r\n",
        end - from as u64
    );
    if sock.write_all(header.as_bytes()).await.is_err() {
        return;
    }
    let to = (end as usize).min(body.len());
    let mut data = std::borrow::Cow::Borrowed(&body[from..to]);
    if let Some(at) = flip.filter(|at| (from..to).contains(at)) {
        data.to_mut()[at - from] ^= 0xff;
        script.lock().unwrap().flip_once = None;
    }
    let limit = match fault {
        Some(Fault::Truncate(n) | Fault::Reset(n) | Fault::Stall(n)) => n.min(data.len()),
        _ => data.len(),
    };
    script.lock().unwrap().sent += limit as u64;
    for chunk in data[..limit].chunks(64 * 1024) {
        if sock.write_all(chunk).await.is_err() {
            return;
        }
    }
    let _ = sock.flush().await;
    match fault {
        Some(Fault::Reset(_)) => {
            let _ = sock.set_zero_linger();
            drop(sock);
        }
        Some(Fault::Stall(_)) => {
            // Hold the connection open without sending until the client hangs up.
            let mut sink = [0u8; 256];
            while let Ok(n) = sock.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        }
        _ => {
            let _ = sock.shutdown().await;
        }
    }
}
