//! The boto3 smoke test (`tests/python/smoke_boto3.py`), run by `tests/python/run.sh` against the
//! real `timeshard` binary: Python's AWS SDK is a client we did not write.
//!
//! This is never skipped. Without python3 and its venv module the test fails and says what to
//! install; `.ci/run` installs both when they are missing. The first run also needs PyPI, to
//! put the pinned boto3 into `<target dir>/py-venv`.

use std::path::Path;
use std::process::Command;

#[test]
fn boto3_smoke_test_passes() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/run.sh");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("running bash {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Shown by the test harness on failure, and with --nocapture.
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "tests/python/run.sh failed ({}); its output is above. If python3 or its venv module \
         is missing, install them (Debian: apt-get install -y python3 python3-venv) or run \
         .ci/run, which does.",
        output.status
    );
    assert!(
        stdout.contains("checks passed"),
        "run.sh succeeded but the smoke test did not report its checks:\n{stdout}"
    );
}
