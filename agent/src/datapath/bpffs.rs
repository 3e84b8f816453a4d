//! Making sure a directory is on a BPF filesystem (bpffs), where maps are pinned so a
//! restarted agent adopts the running state; and removing those pins at `xwan stop`
//! ([`Datapath::remove_pins`]).
//!
//! Production uses `/sys/fs/bpf/xwan`; tests use [`TestBpffs`], a private bpffs mounted under
//! `/tmp` and unmounted on drop, so they never touch `/sys/fs/bpf` and never share maps.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Datapath, DatapathError};

/// `statfs.f_type` of a BPF filesystem.
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// `statfs.f_type` of sysfs (`/sys`): directories cannot be created there.
const SYSFS_MAGIC: i64 = 0x6265_6572;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {} contains a NUL byte", p.display()),
        )
    })
}

/// The filesystem type (`statfs.f_type`) of `path`.
pub fn fs_type(path: &Path) -> io::Result<i64> {
    let c = cstr(path)?;
    // SAFETY: statfs is plain data; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and a valid out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs between libc targets"
    )]
    Ok(st.f_type as i64)
}

/// True when `path` exists and is on a BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    fs_type(path).is_ok_and(|t| t == BPF_FS_MAGIC)
}

/// Mounts a BPF filesystem on the existing directory `dir`.
pub fn mount_bpffs(dir: &Path) -> io::Result<()> {
    mount(c"bpf", dir)
}

/// Mounts a filesystem of type `fstype` (and source of that name: bpf, tracefs) on the
/// existing directory `dir`.
pub(super) fn mount(fstype: &CStr, dir: &Path) -> io::Result<()> {
    let target = cstr(dir)?;
    // SAFETY: valid NUL-terminated strings; no mount data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        let t = fstype.to_string_lossy();
        return Err(io::Error::new(
            e.kind(),
            format!("mount -t {t} {t} {}: {e}", dir.display()),
        ));
    }
    Ok(())
}

/// Detaches the filesystem mounted on `dir` (`umount -l`).
pub(super) fn unmount(dir: &Path) -> io::Result<()> {
    let c = cstr(dir)?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes sure `dir` exists on a BPF filesystem. Returns the directory a bpffs was mounted on,
/// if one had to be mounted (`None` when `dir` already was on bpffs).
///
/// * `dir` on bpffs: nothing to do.
/// * `dir` an existing directory elsewhere: bpffs is mounted on it if it is empty (an error
///   otherwise: nothing is hidden under a mount).
/// * `dir` missing and its nearest existing ancestor on bpffs: the directory is created.
/// * nearest existing ancestor on sysfs (e.g. an unmounted `/sys/fs/bpf`, where nothing can be
///   created): bpffs is mounted on that ancestor (it is the kernel's mount point for it), then
///   the directory is created inside.
/// * otherwise: the directory is created and bpffs mounted on it.
///
/// Needs root (`CAP_SYS_ADMIN`) when something must be mounted.
pub fn ensure_bpffs(dir: &Path) -> io::Result<Option<PathBuf>> {
    if is_bpffs(dir) {
        return Ok(None);
    }
    if dir.exists() {
        // Never hide existing files under a mount.
        if std::fs::read_dir(dir)?.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} is not on a bpf filesystem and is not empty: choose an empty directory, or mount bpffs there (mount -t bpf bpf {})",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        mount_bpffs(dir)?;
        return Ok(Some(dir.to_owned()));
    }
    let ancestor = dir
        .ancestors()
        .skip(1)
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    let mut mounted = None;
    match fs_type(ancestor)? {
        BPF_FS_MAGIC => {}
        SYSFS_MAGIC => {
            mount_bpffs(ancestor)?;
            mounted = Some(ancestor.to_owned());
        }
        _ => {
            std::fs::create_dir_all(dir).map_err(|e| {
                io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
            })?;
            mount_bpffs(dir)?;
            return Ok(Some(dir.to_owned()));
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    Ok(mounted)
}

/// Every map name in `xwan_common::maps` starts with it: what else is in the pin directory
/// is not ours to remove.
const MAP_PIN_PREFIX: &str = "XWAN_";

impl Datapath {
    /// `xwan stop`, after [`Datapath::detach_all`]: closes the maps, removes their pins and
    /// then the pin directory if nothing else is left in it.
    pub fn remove_pins(self) -> Result<(), DatapathError> {
        let dir = self.pin_dir.clone();
        drop(self);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(MAP_PIN_PREFIX) {
                std::fs::remove_file(e.path()).map_err(|error| DatapathError::Sys {
                    what: format!("removing {}", e.path().display()),
                    error,
                })?;
            }
        }
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }
}

/// A private bpffs for one test: a fresh directory under the system temporary directory with
/// a BPF filesystem mounted on it; unmounted (lazily, `MNT_DETACH`) and removed on drop.
#[derive(Debug)]
pub struct TestBpffs {
    path: PathBuf,
}

impl TestBpffs {
    /// Creates and mounts it. Needs root.
    pub fn new() -> io::Result<TestBpffs> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "xwan-bpffs-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
        if let Err(e) = mount_bpffs(&path) {
            let _ = std::fs::remove_dir(&path);
            return Err(e);
        }
        Ok(TestBpffs { path })
    }

    /// The mount point (pin maps directly here).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        if let Err(e) = unmount(&self.path) {
            log::warn!("unmounting test bpffs {}: {e}", self.path.display());
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: plain libc call.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn tmp_is_not_bpffs() {
        assert!(!is_bpffs(&std::env::temp_dir()));
        assert!(!is_bpffs(Path::new("/nonexistent/xwan")));
    }

    #[test]
    fn never_mounts_over_a_non_empty_directory() {
        let dir = std::env::temp_dir().join(format!("xwan-nonempty-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("x")).unwrap();
        let e = ensure_bpffs(&dir).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        assert!(!is_bpffs(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn test_bpffs_mounts_and_cleans_up() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let fs = TestBpffs::new().unwrap();
        let p = fs.path().to_owned();
        assert!(is_bpffs(&p));
        // Already bpffs: nothing mounted; a subdirectory is created, not mounted.
        assert_eq!(ensure_bpffs(&p).unwrap(), None);
        let sub = p.join("a/b");
        assert_eq!(ensure_bpffs(&sub).unwrap(), None);
        assert!(is_bpffs(&sub));
        drop(fs);
        assert!(!p.exists());
    }

    #[test]
    fn ensure_bpffs_mounts_on_a_plain_directory() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("xwan-ensure-{}", std::process::id()));
        let target = dir.join("pins");
        assert_eq!(ensure_bpffs(&target).unwrap(), Some(target.clone()));
        assert!(is_bpffs(&target));
        assert_eq!(ensure_bpffs(&target).unwrap(), None);
        unmount(&target).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
