//! The ways the kernel refuses flowmon's programs and maps, as a type its callers decide on:
//! a missing privilege is told apart from a refusal (a verifier's rejection, a driver without
//! native XDP), which `--ingress-hook auto` answers by taking another hook.

use aya::{
    EbpfError,
    maps::MapError,
    programs::{ProgramError, tc::TcError, xdp::XdpError},
    sys::SyscallError,
};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "permission denied trying to {what}: flowmon needs root (CAP_BPF, CAP_NET_ADMIN and \
         CAP_PERFMON)"
    )]
    PermissionDenied { what: String },
    /// Anything else the kernel said no to; the cause keeps its words (the verifier's log too).
    #[error("the kernel refused to {what}")]
    Refused {
        what: String,
        #[source]
        cause: Box<KernelError>,
    },
}

/// What aya reported.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Object(#[from] EbpfError),
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error(transparent)]
    Map(#[from] MapError),
}

impl DatapathError {
    /// The error of trying to `what`, which aya reported as `cause`.
    pub fn new(what: impl Into<String>, cause: impl Into<KernelError>) -> Self {
        let (what, cause) = (what.into(), cause.into());
        match cause.errno() {
            Some(libc::EPERM) => Self::PermissionDenied { what },
            _ => Self::Refused {
                what,
                cause: Box::new(cause),
            },
        }
    }
}

impl KernelError {
    /// The errno the kernel answered with, where aya kept one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Object(EbpfError::ProgramError(err)) | Self::Program(err) => program_errno(err),
            Self::Object(EbpfError::MapError(err)) | Self::Map(err) => map_errno(err),
            Self::Object(EbpfError::FileError { error, .. }) => error.raw_os_error(),
            Self::Object(_) => None,
        }
    }
}

fn program_errno(err: &ProgramError) -> Option<i32> {
    match err {
        ProgramError::LoadError { io_error, .. }
        | ProgramError::SyscallError(SyscallError { io_error, .. })
        | ProgramError::TcError(TcError::IoError(io_error)) => io_error.raw_os_error(),
        ProgramError::XdpError(XdpError::NetlinkError(err))
        | ProgramError::TcError(TcError::NetlinkError(err)) => err.raw_os_error(),
        ProgramError::MapError(err) => map_errno(err),
        _ => None,
    }
}

fn map_errno(err: &MapError) -> Option<i32> {
    match err {
        MapError::CreateError { io_error, .. }
        | MapError::IoError(io_error)
        | MapError::SyscallError(SyscallError { io_error, .. }) => io_error.raw_os_error(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syscall(errno: i32) -> ProgramError {
        ProgramError::SyscallError(SyscallError {
            call: "bpf_link_create",
            io_error: std::io::Error::from_raw_os_error(errno),
        })
    }

    #[test]
    fn a_missing_privilege_is_told_apart_from_a_refusal() {
        let denied = DatapathError::new("attach XDP to eth0", syscall(libc::EPERM));
        assert!(matches!(denied, DatapathError::PermissionDenied { .. }));
        assert!(denied.to_string().contains("needs root"), "{denied}");
        // EACCES is the verifier's refusal, not a privilege problem.
        let refused = DatapathError::new("load the XDP program", syscall(libc::EACCES));
        let DatapathError::Refused { cause, .. } = &refused else {
            panic!("{refused:?}")
        };
        assert_eq!(cause.errno(), Some(libc::EACCES));
        let chain = format!("{:#}", anyhow::Error::from(refused));
        assert!(
            chain.starts_with("the kernel refused to load the XDP program: ")
                && chain.contains("os error 13"),
            "{chain}"
        );
        let map = DatapathError::new(
            "load the eBPF object",
            EbpfError::MapError(MapError::CreateError {
                name: "FLOWS".into(),
                io_error: std::io::Error::from_raw_os_error(libc::EPERM),
            }),
        );
        assert!(matches!(map, DatapathError::PermissionDenied { .. }));
    }
}
