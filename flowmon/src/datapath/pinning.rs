//! The bpf filesystem the pins live on: mounted at /sys/fs/bpf when missing (as a fresh boot
//! without systemd leaves it), never when the directory is on one already (a bind mount, as in
//! dist/flowmon.service), refused elsewhere when the directory is not on one.

use std::{ffi::CString, mem::size_of, os::unix::ffi::OsStrExt as _, path::Path};

use anyhow::{Context as _, Result, bail};
use aya::maps::MapInfo;
use flowmon_common::{
    COUNTERS_MAP, CREATE_ERRORS_MAP, DatapathCounters, FLOWS_MAP, FRAGMENTS_MAP, FlowBlock,
    FlowKey, FragmentKey, FragmentPorts,
};

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

/// The key and value sizes of each pinned map, as this build lays them out.
const LAYOUTS: [(&str, usize, usize); 4] = [
    (FLOWS_MAP, size_of::<FlowKey>(), size_of::<FlowBlock>()),
    (
        COUNTERS_MAP,
        size_of::<u32>(),
        size_of::<DatapathCounters>(),
    ),
    (CREATE_ERRORS_MAP, size_of::<u32>(), size_of::<u64>()),
    (
        FRAGMENTS_MAP,
        size_of::<FragmentKey>(),
        size_of::<FragmentPorts>(),
    ),
];

/// Fails, with one line that says what to do, when maps a previous run pinned in `dir` are
/// laid out otherwise than this build's: the programs could not use them (the verifier refuses
/// them with a message about offsets), and their counts could not be read.
pub fn check_layouts(dir: &Path) -> Result<()> {
    for (map, key, value) in LAYOUTS {
        let path = dir.join(map);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path)
            .with_context(|| format!("cannot open the pinned map {}", path.display()))?;
        let pinned = (info.key_size() as usize, info.value_size() as usize);
        if pinned != (key, value) {
            bail!(
                "the maps pinned in {} are another flowmon version's ({map}: {}-byte keys and \
                 {}-byte values, this one's {key} and {value}): stop the programs they belong \
                 to and remove the directory",
                dir.display(),
                pinned.0,
                pinned.1
            );
        }
    }
    Ok(())
}
