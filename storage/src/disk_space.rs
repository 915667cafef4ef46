//! The free-space reserve of the data dir's filesystem (`--min-free-disk`).
//! Blobs and RocksDB may share a disk: new blob bytes (uploads, replica
//! receives, repair pulls) stop while free space is under the reserve, so
//! what is left stays for Raft's log, compactions, deletes and GC.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How much must stay free.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reserve {
    Bytes(u64),
    /// Percent of the filesystem's size.
    Percent(f64),
}

impl std::str::FromStr for Reserve {
    type Err = String;

    /// `5%`, or a size such as `512MiB`, `2GiB`, `1048576`.
    fn from_str(s: &str) -> Result<Reserve, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("'{s}' is not a percentage"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("'{s}': a percentage is 0-100"));
            }
            return Ok(Reserve::Percent(p));
        }
        parse_size(t)
            .map(Reserve::Bytes)
            .map_err(|e| format!("{e}, or a percentage such as 5%"))
    }
}

/// A byte size, as every size flag takes it: digits, optionally followed
/// by K, M, G or T (or KiB, MiB, ... ; powers of 1024) or B.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 128MiB, 1GiB, 67108864)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        "t" | "tib" | "tb" => 40,
        _ => return Err(format!("'{s}': unknown unit (use KiB, MiB, GiB or TiB)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

impl Reserve {
    fn bytes(&self, total: u64) -> u64 {
        match *self {
            Reserve::Bytes(b) => b,
            Reserve::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }

    /// The size in bytes on the filesystem that holds `dir`.
    pub fn resolve(&self, dir: &Path) -> io::Result<u64> {
        match *self {
            Reserve::Bytes(b) => Ok(b),
            Reserve::Percent(_) => Ok(self.bytes(statvfs(dir)?.total)),
        }
    }

    /// `k` times as much (a percentage at most 100).
    pub fn times(&self, k: u64) -> Reserve {
        match *self {
            Reserve::Bytes(b) => Reserve::Bytes(b.saturating_mul(k)),
            Reserve::Percent(p) => Reserve::Percent((p * k as f64).min(100.0)),
        }
    }
}

/// Free and total bytes of a filesystem, as an unprivileged writer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Space {
    pub free: u64,
    pub total: u64,
}

/// Free space under the reserve: what to tell the client.
#[derive(Debug, thiserror::Error)]
#[error("the disk of this node is nearly full: {free} bytes free, {reserve} kept in reserve (--min-free-disk); pulls, deletes and GC go on")]
pub struct NoSpace {
    pub free: u64,
    pub reserve: u64,
}

pub struct DiskReserve {
    dir: PathBuf,
    reserve: Reserve,
}

impl DiskReserve {
    pub fn new(dir: &Path, reserve: Reserve) -> DiskReserve {
        DiskReserve {
            dir: dir.to_path_buf(),
            reserve,
        }
    }

    /// The filesystem's space now. Taken afresh every time (a statfs is a
    /// cheap call, and checks come once per upload and per 16 MiB): a
    /// reading kept even 250 ms let quick pushes overshoot the reserve.
    pub fn space(&self) -> io::Result<Space> {
        statvfs(&self.dir)
    }

    /// Refuse new blob bytes while free space is under the reserve. An
    /// error reading the filesystem's size lets the write go on (the write
    /// itself then reports what is wrong).
    pub fn check(&self) -> Result<(), NoSpace> {
        let Ok(s) = self.space() else {
            return Ok(());
        };
        let reserve = self.reserve.bytes(s.total);
        if s.free < reserve {
            Err(NoSpace {
                free: s.free,
                reserve,
            })
        } else {
            Ok(())
        }
    }
}

// The field types of `statvfs` differ between platforms.
#[allow(clippy::unnecessary_cast)]
fn statvfs(dir: &Path) -> io::Result<Space> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let block = st.f_frsize as u64;
    Ok(Space {
        free: (st.f_bavail as u64).saturating_mul(block),
        total: (st.f_blocks as u64).saturating_mul(block),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reserves_parse_as_sizes_or_percentages() {
        assert_eq!("5%".parse(), Ok(Reserve::Percent(5.0)));
        assert_eq!("512MiB".parse(), Ok(Reserve::Bytes(512 << 20)));
        assert_eq!("2g".parse(), Ok(Reserve::Bytes(2 << 30)));
        assert_eq!("0".parse(), Ok(Reserve::Bytes(0)));
        for bad in [
            "",
            "%",
            "101%",
            "-1%",
            "5 parsecs",
            "99999999999999999999",
            "16777216TiB",
        ] {
            assert!(bad.parse::<Reserve>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_reserve_larger_than_the_free_space_refuses_and_zero_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let free = statvfs(dir.path()).unwrap().free;
        let full = DiskReserve::new(dir.path(), Reserve::Bytes(free + (1 << 40)));
        let e = full.check().unwrap_err();
        assert!(e.free > 0 && e.reserve > e.free);
        assert!(e.to_string().contains("--min-free-disk"));
        assert!(DiskReserve::new(dir.path(), Reserve::Bytes(0))
            .check()
            .is_ok());
        assert!(DiskReserve::new(dir.path(), Reserve::Percent(100.0))
            .check()
            .is_err());
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in "\\PC{0,24}") {
            let _ = s.parse::<Reserve>();
        }

        #[test]
        fn percent_reserves_stay_within_the_filesystem(p in 0.0f64..=100.0, total in 0u64..(1 << 50)) {
            prop_assert!(Reserve::Percent(p).bytes(total) <= total);
        }
    }
}
