//! `cargo xtask deb`: the Debian package of xwan, built from the workspace (the eBPF object
//! is embedded in the binary), then checked: its contents against what it must ship, its
//! control data, and lintian where it is installed (`cargo xtask setup` installs it).
//!
//! What it ships:
//!
//! * `/usr/sbin/xwan` (stripped), `/lib/systemd/system/xwan.service` (`packaging/`);
//! * `/etc/xwan/xwan.toml`, a conffile: `examples/minimal.toml` with a header;
//! * manual pages `xwan(8)` and `xwan-COMMAND(8)`, and bash/zsh/fish completions, written by
//!   the binary from its own command-line definition (`xwan generate`);
//! * `/usr/share/doc/xwan`: the README, the examples, the Prometheus rules and the Grafana
//!   dashboard, `copyright`, `changelog.Debian.gz`;
//! * maintainer scripts that do what `dh_installsystemd --no-enable` would: never enable or
//!   start the service on install (edit the configuration, then `systemctl enable --now
//!   xwan`), restart a running one on upgrade (the data plane keeps forwarding across it),
//!   stop it on removal.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::{process, setup};

/// Every path the package must contain (directories end with '/').
const MUST_SHIP: &[&str] = &[
    "./usr/sbin/xwan",
    "./lib/systemd/system/xwan.service",
    "./etc/xwan/xwan.toml",
    "./usr/share/man/man8/xwan.8.gz",
    "./usr/share/man/man8/xwan-run.8.gz",
    "./usr/share/man/man8/xwan-status.8.gz",
    "./usr/share/man/man8/xwan-reload.8.gz",
    "./usr/share/man/man8/xwan-stop.8.gz",
    "./usr/share/bash-completion/completions/xwan",
    "./usr/share/zsh/vendor-completions/_xwan",
    "./usr/share/fish/vendor_completions.d/xwan.fish",
    "./usr/share/doc/xwan/copyright",
    "./usr/share/doc/xwan/changelog.Debian.gz",
    "./usr/share/doc/xwan/README.md.gz",
    "./usr/share/doc/xwan/examples/seed-branch.toml",
    "./usr/share/doc/xwan/examples/prometheus/alerts.yml",
    "./usr/share/doc/xwan/examples/grafana/xwan.json",
];

/// Lintian tags that stay, each with why.
const LINTIAN_ACCEPTED: &[(&str, &str)] = &[(
    "initial-upload-closes-no-bugs",
    "xwan is not in Debian's archive: there is no ITP bug for its changelog to close",
)];

pub fn run() -> Result<()> {
    setup::ensure()?;
    let deb = build()?;
    check(&deb)?;
    println!("ok: {}", deb.display());
    Ok(())
}

/// The package of the current build: the one `cargo xtask deb` left if it is newer than the
/// release binary (as in `cargo xtask test`, which has just built it), else built and
/// checked now. For the VM suite, which installs it.
pub fn fresh() -> Result<PathBuf> {
    let root = process::repo_root();
    // The binary as the sources are now, so that a package older than them is rebuilt.
    process::run(&mut process::cargo(["build", "--release", "-p", "xwan"]))?;
    let newest = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let binary = newest(&root.join("target/release/xwan"));
    let built = fs::read_dir(root.join("target/deb"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| newest(p));
    match built {
        Some(deb) if binary.is_some() && newest(&deb) > binary => Ok(deb),
        _ => {
            let deb = build()?;
            check(&deb)?;
            Ok(deb)
        }
    }
}

/// `version` of the workspace's `[workspace.package]`.
fn workspace_version() -> Result<String> {
    let text = fs::read_to_string(process::repo_root().join("Cargo.toml"))?;
    let section = text
        .split("[workspace.package]")
        .nth(1)
        .context("no [workspace.package] in Cargo.toml")?;
    (section.lines())
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .context("no version in [workspace.package]")
}

/// Builds the package; returns its path.
fn build() -> Result<PathBuf> {
    let root = process::repo_root();
    process::run(&mut process::cargo(["build", "--release", "-p", "xwan"]))?;
    let version = format!("{}-1", workspace_version()?);
    let arch = process::output(process::command("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    let out = root.join("target/deb");
    let stage = out.join("root");
    let _ = fs::remove_dir_all(&stage);
    let put = |to: &str, from: &[u8], mode: u32| -> Result<()> {
        let path = stage.join(to.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap())?;
        fs::write(&path, from).with_context(|| format!("writing {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let read = |p: &str| fs::read(root.join(p)).with_context(|| format!("reading {p}"));

    // The binary, stripped.
    let binary = stage.join("usr/sbin/xwan");
    fs::create_dir_all(binary.parent().unwrap())?;
    process::run(
        process::command("strip")
            .args(["--strip-unneeded", "--remove-section=.comment", "-o"])
            .arg(&binary)
            .arg(root.join("target/release/xwan")),
    )?;
    put(
        "/lib/systemd/system/xwan.service",
        &read("packaging/xwan.service")?,
        0o644,
    )?;
    let mut config =
        b"# /etc/xwan/xwan.toml: the xwan agent's configuration (xwan.service reads it).\n\
        # An example to adapt: interfaces, addresses and rules are this machine's to set.\n\
        # Check it with `xwan check --config /etc/xwan/xwan.toml`; the examples in\n\
        # /usr/share/doc/xwan/examples show routers with backups, IPsec links and more.\n\n"
            .to_vec();
    config.extend(read("examples/minimal.toml")?);
    put("/etc/xwan/xwan.toml", &config, 0o644)?;

    // Manual pages and completions from the binary's own definition.
    let generated = out.join("generated");
    let _ = fs::remove_dir_all(&generated);
    process::run(process::command(&binary).arg("generate").arg(&generated))?;
    for entry in fs::read_dir(generated.join("man"))? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        put(
            &format!("/usr/share/man/man8/{name}.gz"),
            &gzip(&fs::read(&path)?)?,
            0o644,
        )?;
    }
    for (file, to) in [
        ("xwan", "/usr/share/bash-completion/completions/xwan"),
        ("_xwan", "/usr/share/zsh/vendor-completions/_xwan"),
        (
            "xwan.fish",
            "/usr/share/fish/vendor_completions.d/xwan.fish",
        ),
    ] {
        put(
            to,
            &fs::read(generated.join("completions").join(file))?,
            0o644,
        )?;
    }

    // Documentation.
    let doc = "/usr/share/doc/xwan";
    put(
        &format!("{doc}/README.md.gz"),
        &gzip(&read("README.md")?)?,
        0o644,
    )?;
    put(&format!("{doc}/copyright"), copyright().as_bytes(), 0o644)?;
    let date = process::output(process::command("git").args(["log", "-1", "--format=%aD"]))
        .map(|d| d.trim().to_owned())
        .unwrap_or_else(|_| "Tue, 08 Dec 2026 00:00:00 +0000".into());
    let changelog = format!(
        "xwan ({version}) unstable; urgency=medium\n\n  * Built from the xwan workspace by \
         cargo xtask deb.\n\n -- xwan developers <xwan-dev@example.org>  {date}\n"
    );
    put(
        &format!("{doc}/changelog.Debian.gz"),
        &gzip(changelog.as_bytes())?,
        0o644,
    )?;
    for entry in walk(&root.join("examples"))? {
        let rel = entry
            .strip_prefix(root.join("examples"))?
            .to_string_lossy()
            .into_owned();
        put(&format!("{doc}/examples/{rel}"), &fs::read(&entry)?, 0o644)?;
    }

    // Control data.
    let glibc = glibc_needed(&binary)?;
    let size_kib = walk(&stage)?
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum::<u64>()
        .div_ceil(1024);
    let control = format!(
        "Package: xwan\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: xwan developers <xwan-dev@example.org>\n\
         Installed-Size: {size_kib}\n\
         Depends: libc6 (>= {glibc}), libgcc-s1 (>= 3.0), init-system-helpers (>= 1.52)\n\
         Recommends: iproute2, nftables\n\
         Suggests: prometheus, strongswan-swanctl\n\
         Section: net\n\
         Priority: optional\n\
         Description: multi-link policy router on XDP\n \
         xwan steers each flow of an edge router's LAN to a gateway of a router\n \
         object (weighted, with backups and failover) in XDP and TC programs, and\n \
         probes every gateway: routed IPsec tunnels (VTI, xfrm interfaces) or plain\n \
         WAN next hops. A Prometheus endpoint, event hooks and a control socket\n \
         make it observable and scriptable.\n"
    );
    put("/DEBIAN/control", control.as_bytes(), 0o644)?;
    put("/DEBIAN/conffiles", b"/etc/xwan/xwan.toml\n", 0o644)?;
    put("/DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    put("/DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
    put("/DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;

    let deb = out.join(format!("xwan_{version}_{arch}.deb"));
    process::run(
        process::command("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    Ok(deb)
}

/// The package's contents and control data are what they must be; lintian finds nothing
/// beyond [`LINTIAN_ACCEPTED`].
fn check(deb: &Path) -> Result<()> {
    let contents = process::output(process::command("dpkg-deb").arg("--contents").arg(deb))?;
    let paths: Vec<&str> = contents
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    let missing: Vec<&&str> = MUST_SHIP.iter().filter(|p| !paths.contains(p)).collect();
    if !missing.is_empty() {
        bail!("{} lacks {missing:?}", deb.display());
    }
    let owned_by_others: Vec<&str> = (contents.lines())
        .filter(|l| !l.contains(" root/root "))
        .collect();
    if !owned_by_others.is_empty() {
        bail!("files not owned by root: {owned_by_others:?}");
    }
    let info = process::output(process::command("dpkg-deb").arg("--info").arg(deb))?;
    for field in ["Package: xwan", "Depends: libc6", "Installed-Size:"] {
        if !info.contains(field) {
            bail!("control data without {field:?}:\n{info}");
        }
    }
    println!("ok: {} files, control data:\n{info}", paths.len());
    // The packaged binary accepts the packaged configuration.
    let extracted = deb.with_extension("extracted");
    let _ = fs::remove_dir_all(&extracted);
    process::run(
        process::command("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&extracted),
    )?;
    process::run(
        process::command(extracted.join("usr/sbin/xwan"))
            .args(["check", "--config"])
            .arg(extracted.join("etc/xwan/xwan.toml"))
            .stdout(std::process::Stdio::null()),
    )?;
    let _ = fs::remove_dir_all(&extracted);
    println!("ok: the packaged xwan accepts the packaged /etc/xwan/xwan.toml");
    let Some(lintian) = process::which("lintian") else {
        println!("lintian: not installed (cargo xtask setup installs it): not checked");
        return Ok(());
    };
    let out = process::command(lintian)
        .args(["--no-tag-display-limit", "--allow-root"])
        .arg(deb)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let unexplained: Vec<&str> = (text.lines())
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .filter(|l| !LINTIAN_ACCEPTED.iter().any(|(tag, _)| l.contains(tag)))
        .collect();
    for line in text.lines() {
        println!("lintian: {line}");
    }
    if !unexplained.is_empty() {
        bail!("lintian: {}", unexplained.join("\n"));
    }
    println!("ok: lintian (what it still says is explained in xtask/src/deb.rs)");
    Ok(())
}

/// gzip -9n: reproducible (no name, no time).
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = process::command("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer.join().expect("gzip's writer")?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

/// Files under `dir`, recursively, sorted.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The newest glibc symbol version the binary needs.
fn glibc_needed(binary: &Path) -> Result<String> {
    let symbols = process::output(process::command("objdump").arg("-T").arg(binary))?;
    let mut best: Vec<u32> = vec![2, 2];
    for v in symbols.split("GLIBC_").skip(1) {
        let v: Vec<u32> = v
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap_or("")
            .split('.')
            .filter_map(|n| n.parse().ok())
            .collect();
        if v > best {
            best = v;
        }
    }
    Ok(best
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

fn copyright() -> String {
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
     Upstream-Name: xwan\n\n\
     Files: *\n\
     Copyright: 2026 the xwan developers\n\
     License: MIT or Apache-2.0\n \
     Licensed under the MIT license or the Apache License, Version 2.0, at your option.\n \
     On Debian systems the Apache License is in /usr/share/common-licenses/Apache-2.0.\n"
        .to_owned()
}

const POSTINST: &str = r#"#!/bin/sh
set -e
# As dh_installsystemd --no-enable: the service is never enabled or started on install (edit
# /etc/xwan/xwan.toml, then `systemctl enable --now xwan`); one the administrator enabled keeps
# its links; an upgrade restarts a running agent, and the data plane keeps forwarding across
# the restart.
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ]; then
	if deb-systemd-helper debian-installed 'xwan.service'; then
		deb-systemd-helper unmask 'xwan.service' >/dev/null || true
		if deb-systemd-helper --quiet was-enabled 'xwan.service'; then
			deb-systemd-helper enable 'xwan.service' >/dev/null || true
		fi
	fi
	deb-systemd-helper update-state 'xwan.service' >/dev/null || true
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			deb-systemd-invoke try-restart 'xwan.service' >/dev/null || true
		fi
	fi
fi
"#;

const PRERM: &str = r#"#!/bin/sh
set -e
# Removal stops steering (what `xwan stop` does); an upgrade leaves the agent to postinst.
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	deb-systemd-invoke stop 'xwan.service' >/dev/null || true
fi
"#;

const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "remove" ] && [ -x "/usr/bin/deb-systemd-helper" ]; then
	deb-systemd-helper mask 'xwan.service' >/dev/null || true
fi
if [ "$1" = "purge" ] && [ -x "/usr/bin/deb-systemd-helper" ]; then
	deb-systemd-helper purge 'xwan.service' >/dev/null || true
	deb-systemd-helper unmask 'xwan.service' >/dev/null || true
fi
"#;
