//! A minimal static HTTP/1.1 server for one file, used by `bench/flash.sh` to serve the
//! benchmark image on loopback without competing for CPU: the body is sent with
//! `std::io::copy` from the file to the socket, which Linux turns into `sendfile`.
//! Supports `Range: bytes=N-`. Prints `listening on 127.0.0.1:<port>` once ready.
//!
//! Usage: `serve_image FILE [PORT]`

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;

fn serve(sock: TcpStream, path: &PathBuf) -> std::io::Result<()> {
    let mut reader = BufReader::new(sock.try_clone()?);
    let mut range_start = 0u64;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("range")
            && let Some(n) = v
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
        {
            range_start = n.parse().unwrap_or(0);
        }
    }
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut out = sock;
    if range_start > 0 {
        if range_start >= len {
            return write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        write!(
            out,
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {range_start}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            len - 1,
            len - range_start
        )?;
        file.seek(SeekFrom::Start(range_start))?;
    } else {
        write!(
            out,
            "HTTP/1.1 200 OK\r\nAccept-Ranges: bytes\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )?;
    }
    std::io::copy(&mut file.take(len - range_start), &mut out)?;
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
