use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds the kernel half (`flowmon-ebpf`) for the bpf target with the nightly toolchain and
/// leaves the object in OUT_DIR, where `src/datapath` embeds it. `AYA_BUILD_SKIP=1` skips this
/// for checks that need no working object: an empty stand-in is embedded, and loading it fails.
fn main() -> anyhow::Result<()> {
    if std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true") {
        let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
        std::fs::write(std::path::Path::new(&out_dir).join("flowmon"), [])?;
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|package| package.name.as_str() == "flowmon-ebpf")
        .ok_or_else(|| anyhow!("flowmon-ebpf package not found"))?;
    // The kernel crate compiles flowmon-common's types in too: a change there must rebuild it,
    // or the two halves disagree on the layout of what they share.
    let common = metadata.workspace_root.join("flowmon-common");
    println!("cargo:rerun-if-changed={common}");
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [Package {
            name: "flowmon-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
