//! Idle memory of `timeshard serve`: starts the real binary on a fresh data directory, waits
//! until `/health` answers, lets it sit, and reads its resident set size from /proc.
//!
//! `cargo bench -p timeshard-server --bench idle_rss`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn health(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("timeshard-idle-rss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(45678);
    let mut child = Command::new(env!("CARGO_BIN_EXE_timeshard"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log",
            "warn",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start timeshard");
    let started = Instant::now();
    while !health(port) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not become healthy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = started.elapsed();
    for _ in 0..20 {
        health(port);
    }
    std::thread::sleep(Duration::from_secs(3));
    let rss = status_kib(child.id(), "VmRSS:");
    let peak = status_kib(child.id(), "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!("| benchmark | result | notes |");
    println!("|---|---|---|");
    println!(
        "| idle RSS of `timeshard serve` | {:.1} MiB | peak {:.1} MiB; healthy {:.0} ms after start; fresh data dir, 21 requests served (target <= 30 MiB) |",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        ready.as_secs_f64() * 1e3
    );
}
