//! A minimal static HTTP/1.1 server used by `bench/flash.sh` and `bench/delta.sh` to serve
//! benchmark images on loopback without competing for CPU: the body is sent with
//! `std::io::copy` from the file to the socket, which Linux turns into `sendfile`.
//! Supports `Range: bytes=N-` and `bytes=N-M`. `GET /NAME` serves the file NAME next to
//! FILE when there is one, else FILE; `GET /_sent` answers the number of body bytes sent
//! so far (what a delta install costs). Prints `listening on 127.0.0.1:<port>` once ready.
//!
//! Usage: `serve_image FILE [PORT]`

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Body bytes sent, all responses together.
static SENT: AtomicU64 = AtomicU64::new(0);

/// A `Range: bytes=` request: the first byte, and the last if given.
type Range = (u64, Option<u64>);

/// The request's path and `Range`.
fn read_request(sock: &TcpStream) -> std::io::Result<(String, Option<Range>)> {
    let mut reader = BufReader::new(sock.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("range")
            && let Some((a, b)) = v
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
            && let Ok(a) = a.parse()
        {
            range = Some((a, b.parse().ok()));
        }
    }
    Ok((target, range))
}

/// The file a request path names: a sibling of `default` by that name, else `default`.
fn file_for(target: &str, default: &Path) -> PathBuf {
    let name = target.rsplit('/').next().unwrap_or("");
    match default.parent() {
        Some(dir) if !name.is_empty() && dir.join(name).is_file() => dir.join(name),
        _ => default.to_path_buf(),
    }
}

fn serve(sock: TcpStream, path: &Path) -> std::io::Result<()> {
    let (target, range) = read_request(&sock)?;
    let mut out = sock;
    if target == "/_sent" {
        let body = SENT.load(Ordering::Relaxed).to_string();
        return write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let mut file = File::open(file_for(&target, path))?;
    let len = file.metadata()?.len();
    let (start, end) = match range {
        Some((a, _)) if a >= len => {
            return write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Some((a, b)) => {
            let last = b.map_or(len - 1, |b| b.min(len - 1));
            write!(
                out,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{last}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                last + 1 - a
            )?;
            (a, last + 1)
        }
        None => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nAccept-Ranges: bytes\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )?;
            (0, len)
        }
    };
    file.seek(SeekFrom::Start(start))?;
    let n = std::io::copy(&mut file.take(end - start), &mut out)?;
    SENT.fetch_add(n, Ordering::Relaxed);
    Ok(())
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().expect("usage: serve_image FILE [PORT]"));
    let port = args.next().unwrap_or_else(|| "0".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for sock in listener.incoming() {
        let sock = sock?;
        let path = path.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(sock, &path) {
                eprintln!("serve_image: {e}");
            }
        });
    }
    Ok(())
}
