//! File systems on which an advisory lock cannot be trusted to keep out a writer on another
//! machine: network and user-space file systems, recognised by `statfs`'s `f_type`.

use std::path::Path;

/// `f_type` magic numbers (linux/magic.h and the file systems' own headers) of file systems
/// whose `flock` is emulated, local to one client, or up to a user-space server.
const UNTRUSTED: [(u32, &str); 10] = [
    (0x6969, "NFS"),
    (0x517B, "SMB"),
    (0xFE53_4D42, "SMB2"),
    (0xFF53_4D42, "CIFS"),
    (0x6573_5546, "FUSE"),
    (0x00C3_6400, "Ceph"),
    (0x0102_1997, "9P"),
    (0x5346_414F, "AFS"),
    (0x0BD0_0BD0, "Lustre"),
    (0x4750_4653, "GPFS"),
];

/// The name of the file system with magic number `f_type` if a lock on it cannot be trusted.
pub(crate) fn classify(f_type: u32) -> Option<&'static str> {
    UNTRUSTED
        .iter()
        .find(|(magic, _)| *magic == f_type)
        .map(|(_, name)| *name)
}

/// The untrusted file system `dir` lives on, if it does.
#[cfg(target_os = "linux")]
pub(crate) fn untrusted(dir: &Path) -> std::io::Result<Option<&'static str>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path holds a NUL byte"))?;
    // SAFETY: `statfs` is plain data, for which all-zero bytes are a valid value.
    let mut info: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a live `statfs` the call fills in.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut info) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // `f_type` is a signed word on some targets; the magic numbers are its low 32 bits.
    #[allow(clippy::unnecessary_cast)]
    Ok(classify(info.f_type as u32))
}

/// Elsewhere the file system is not classified: the lock is trusted.
#[cfg(not(target_os = "linux"))]
pub(crate) fn untrusted(_dir: &Path) -> std::io::Result<Option<&'static str>> {
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::{classify, untrusted};

    #[test]
    fn network_and_user_space_file_systems_are_untrusted() {
        assert_eq!(classify(0x6969), Some("NFS"));
        assert_eq!(classify(0xFF53_4D42), Some("CIFS"));
        assert_eq!(classify(0xFE53_4D42), Some("SMB2"));
        assert_eq!(classify(0x6573_5546), Some("FUSE"));
        assert_eq!(classify(0x0102_1997), Some("9P"));
        assert_eq!(classify(0x0BD0_0BD0), Some("Lustre"));
        // ext4, XFS, Btrfs, tmpfs, overlayfs
        for local in [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x794C_7630] {
            assert_eq!(classify(local), None, "{local:#x}");
        }
    }

    #[test]
    fn the_temporary_directory_is_classified() {
        // Whatever it is, asking must work; CI's /tmp is local.
        untrusted(&std::env::temp_dir()).unwrap();
    }
}
