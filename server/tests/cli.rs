//! The `timeshard` binary: configuration precedence across flags, `TIMESHARD_*` environment
//! variables and the TOML file (which only a child process can show, since the variables are
//! process-wide), startup refusals, and a clean exit on SIGTERM.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn timeshard() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_timeshard"));
    // Only the variables a test sets.
    cmd.env_clear();
    cmd
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.success(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn value<'a>(toml: &'a str, key: &str) -> &'a str {
    toml.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in\n{toml}"))
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("timeshard.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9000\"\nregion = \"eu-west-1\"\naccount_id = \"111111111111\"\nlog = \"warn\"\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = run(timeshard()
        .args(["check-config", "--region", "ap-south-1"])
        .env("TIMESHARD_CONFIG", &file)
        .env("TIMESHARD_REGION", "us-west-2")
        .env("TIMESHARD_LISTEN", "127.0.0.1:9100")
        .env("TIMESHARD_ACCESS_KEY_ID", "AKIDENV")
        .env("TIMESHARD_SECRET_ACCESS_KEY", "env-secret"));
    assert!(ok, "{stderr}");
    assert_eq!(value(&stdout, "region"), "\"ap-south-1\""); // flag
    assert_eq!(value(&stdout, "listen"), "\"127.0.0.1:9100\""); // env
    assert_eq!(value(&stdout, "account_id"), "\"111111111111\""); // file
    assert_eq!(value(&stdout, "log"), "\"warn\""); // file
    assert_eq!(value(&stdout, "data_dir"), "\"./timeshard-data\""); // default
    assert_eq!(value(&stdout, "sync"), "\"always\""); // default
    assert_eq!(value(&stdout, "access_key_id"), "[\"AKIDENV\"]");
    assert!(!stdout.contains("env-secret"), "{stdout}");
}

#[test]
fn unknown_file_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nsycn = \"never\"\n").unwrap();
    let (ok, _, stderr) = run(timeshard().arg("check-config").arg("--config").arg(&file));
    assert!(!ok);
    assert!(stderr.contains("sycn"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
}

#[test]
fn public_listen_without_credentials_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run(timeshard()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path()));
    assert!(!ok);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without credentials"),
        "{stderr}"
    );
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
    // Nothing was created: validation happens before the store is opened.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn serve_answers_health_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let mut child = timeshard()
        .args(["serve", "--sync", "never", "--log", "warn", "--listen"])
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the server did not start listening"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the server exited early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = support::send(addr, support::get(addr, "/health")).await;
    assert_eq!(r.status(), 200);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(exit.success(), "exit {exit:?}: {stderr}");
}
