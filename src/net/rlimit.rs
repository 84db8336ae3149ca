//! The open-file limit. Servers that hold thousands of connections need more than the usual soft
//! limit of 1024 descriptors; the hard limit is what the administrator allows, so take all of it.

/// Raises the soft limit on open files to the hard limit. Returns the new soft limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// Descriptors kept out of the connection budget: for what a server opens while serving the
/// connections it has (an HTTP request's file, a history database, a log), so a storm of new
/// connections cannot turn into errors for the clients already being served.
pub const FD_RESERVE: u64 = 16;

/// The soft limit on open files, if it can be read.
pub fn fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed in.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

/// Descriptors open now (Linux: `/proc/self/fd`; elsewhere unknown, counted as none).
fn fds_open() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// How many connections of `fds_per_conn` descriptors each fit in what is left of the open-file
/// limit after what is open now and [`FD_RESERVE`]; `None` when the limit is unknown or unlimited.
pub fn conn_budget(fds_per_conn: u64) -> Option<usize> {
    let limit = fd_limit().filter(|&l| l != libc::RLIM_INFINITY)?;
    let free = limit.saturating_sub(fds_open() + FD_RESERVE);
    Some(
        usize::try_from(free / fds_per_conn.max(1))
            .unwrap_or(usize::MAX)
            .max(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_the_reserve_free() {
        let limit = fd_limit().expect("a limit");
        let one = conn_budget(1).expect("a budget") as u64;
        assert!(
            one + FD_RESERVE <= limit,
            "{one} connections within {limit}"
        );
        let four = conn_budget(4).expect("a budget") as u64;
        assert!(four <= one / 4 + 1, "{four} vs {one}");
    }
}
