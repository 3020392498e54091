//! `osroll flash` from stdin and from one TCP connection, as the seed's
//! `ncat -l | zstd -d | dd` would be: raw or zstd input, the checksum required unless
//! waived, the size guard, and the slot read back.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

/// 3 MiB: text, then a long run of zeros (zeroed, not written), then more text.
fn image() -> Vec<u8> {
    let mut img: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    img.resize(2 << 20, 0);
    img.extend((0..(1u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    img
}

fn checksum(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn osroll() -> Command {
    Command::new(env!("CARGO_BIN_EXE_osroll"))
}

/// `cat FILE | osroll flash - ARGS`, through a shell as a user would type it.
fn flash_stdin(file: &Path, args: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat '{}' | '{}' flash - {args} --quiet",
            file.display(),
            env!("CARGO_BIN_EXE_osroll")
        ))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn stdin_zstd_and_raw_with_the_same_checks_as_http() {
    let dir = tempfile::tempdir().unwrap();
    let img = image();
    let z = zstd::encode_all(&img[..], 3).unwrap();
    let zst = dir.path().join("img.zst");
    let raw = dir.path().join("img.raw");
    std::fs::write(&zst, &z).unwrap();
    std::fs::write(&raw, &img).unwrap();

    let slot = dir.path().join("slot-a");
    let out = flash_stdin(
        &zst,
        &format!("--checksum {} --to '{}'", checksum(&z), slot.display()),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&slot).unwrap(), img);
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains(&format!("{} received", z.len()))
            && line.contains("matches, read-back verified"),
        "{line}"
    );

    // Raw input, with the expected size.
    let slot = dir.path().join("slot-b");
    let out = flash_stdin(
        &raw,
        &format!(
            "--checksum {} --size {} --to '{}'",
            checksum(&img),
            img.len(),
            slot.display()
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&slot).unwrap(), img);

    // No checksum: refused unless waived explicitly.
    let slot = dir.path().join("slot-c");
    let out = flash_stdin(&zst, &format!("--to '{}'", slot.display()));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--checksum"),
        "{}",
        text(&out)
    );
    let out = flash_stdin(&zst, &format!("--no-checksum --to '{}'", slot.display()));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("checksum waived"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&slot).unwrap(), img);

    // A wrong checksum and a too small --size fail.
    let out = flash_stdin(
        &zst,
        &format!(
            "--checksum {} --to '{}'",
            checksum(b"other"),
            dir.path().join("d").display()
        ),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{}",
        text(&out)
    );
    let out = flash_stdin(
        &zst,
        &format!(
            "--checksum {} --size 4096 --to '{}'",
            checksum(&z),
            dir.path().join("e").display()
        ),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("image too large"),
        "{}",
        text(&out)
    );
}

/// Start `osroll flash --listen 127.0.0.1:0 ARGS` and return it with the bound address.
fn listen(args: &[&str]) -> (std::process::Child, String) {
    let mut child = osroll()
        .args(["flash", "--listen", "127.0.0.1:0", "--quiet"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first stderr line: {line:?}"))
        .trim()
        .to_string();
    // Keep draining stderr so the child never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, addr)
}

#[test]
fn tcp_send_into_listen() {
    let dir = tempfile::tempdir().unwrap();
    let img = image();
    let z = zstd::encode_all(&img[..], 3).unwrap();
    let slot = dir.path().join("slot");
    let sum = checksum(&z);
    let (child, addr) = listen(&["--checksum", &sum, "--to", slot.to_str().unwrap()]);
    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.write_all(&z).unwrap();
    drop(conn);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&slot).unwrap(), img);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("matches, read-back verified"),
        "{}",
        text(&out)
    );

    // A sender that stops halfway: the checksum does not match, nothing is claimed.
    let (child, addr) = listen(&[
        "--checksum",
        &sum,
        "--to",
        dir.path().join("cut").to_str().unwrap(),
    ]);
    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.write_all(&z[..z.len() / 2]).unwrap();
    drop(conn);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
}
