//! `packaging/xwan.service`: systemd accepts it (`systemd-analyze verify`), and its sandbox
//! keeps the exposure `systemd-analyze security` reports at "OK" (below 4.0; the figure is
//! printed). How the agent behaves under it is `privileged::service`'s topic. Skipped, with a
//! message, where systemd-analyze is missing.

use std::{path::Path, process::Command};

/// The unit, its `/usr/sbin/xwan` replaced by this build's binary (verify checks that the
/// commands exist), written to a directory of its own.
fn unit_here(tag: &str) -> Option<std::path::PathBuf> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no systemd-analyze: packaging/xwan.service not checked");
        return None;
    }
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/xwan.service");
    let text = std::fs::read_to_string(unit).expect("read the unit");
    let dir = std::env::temp_dir().join(format!("xwan-unit-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("xwan.service");
    std::fs::write(
        &path,
        text.replace("/usr/sbin/xwan", env!("CARGO_BIN_EXE_xwan")),
    )
    .unwrap();
    Some(path)
}

#[test]
fn systemd_accepts_the_unit() {
    let Some(unit) = unit_here("verify") else {
        return;
    };
    // The manual page is the package's (`cargo xtask deb`), not installed here.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(unit.parent().unwrap());
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_units_sandbox_keeps_its_exposure_ok() {
    let Some(unit) = unit_here("security") else {
        return;
    };
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(unit.parent().unwrap());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = (text.lines())
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure in {line:?}"));
    println!("{}", line.trim());
    assert!(score < 4.0, "the sandbox got weaker: {line}");
}
