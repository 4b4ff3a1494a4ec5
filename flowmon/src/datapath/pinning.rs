//! The bpf filesystem the pins live on: mounted at /sys/fs/bpf when missing (as a fresh boot
//! without systemd leaves it), never when the directory is on one already (a bind mount, as in
//! dist/flowmon.service), refused elsewhere when the directory is not on one.

use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::Path};

use anyhow::{Context as _, Result, bail};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const DEFAULT_MOUNT: &str = "/sys/fs/bpf";

fn on_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes sure `dir` exists on a bpf filesystem.
pub fn prepare(dir: &Path) -> Result<()> {
    if dir.starts_with(DEFAULT_MOUNT) && !on_bpffs(dir) && !on_bpffs(Path::new(DEFAULT_MOUNT)) {
        tracing::info!("mounting bpffs on {DEFAULT_MOUNT}");
        let target = CString::new(DEFAULT_MOUNT).expect("no NUL");
        let fstype = CString::new("bpf").expect("no NUL");
        // SAFETY: valid NUL-terminated strings; no data argument.
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
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot mount bpffs on {DEFAULT_MOUNT}"));
        }
    }
    if let Err(err) = std::fs::create_dir_all(dir) {
        if err.kind() == std::io::ErrorKind::PermissionDenied {
            // Capabilities do not open directories: the user flowmon runs as must own it.
            bail!(
                "permission denied creating the pin directory {}: flowmon's user must be able to \
                 reach and write it (systemd mounts /sys/fs/bpf for root alone; \
                 dist/flowmon.service binds /sys/fs/bpf/flowmon into /run/flowmon/bpf)",
                dir.display()
            );
        }
        return Err(err).with_context(|| format!("cannot create {}", dir.display()));
    }
    if !on_bpffs(dir) {
        bail!("pin directory {} is not on a bpf filesystem", dir.display());
    }
    Ok(())
}
