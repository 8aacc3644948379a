//! The process's file-descriptor budget: raised to the hard limit at start, and shared out so
//! that no listener can take the descriptors the buses, the database and the uplinks need.

/// Descriptors kept back whatever the site: standard streams, the runtime's epoll and event
/// descriptors, the journal socket, the database's files (main, WAL, shared memory) as the
/// writer and each reader open them, the anchor and key files, the serial ports' lock files.
pub const BASE_RESERVE: u64 = 48;

/// The budget at start: the soft limit after raising it, the hard limit, and how many
/// descriptors were open then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// `RLIMIT_NOFILE` soft limit in force (after raising).
    pub soft: u64,
    /// `RLIMIT_NOFILE` hard limit.
    pub hard: u64,
    /// Descriptors open when measured.
    pub open: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (an unlimited hard limit raises it to
/// 1,048,576) and reads the budget. Failing to raise it is not fatal: the budget is what it is.
pub fn raise_nofile() -> FdBudget {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    const UNLIMITED_AS: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(UNLIMITED_AS);
    let mut soft = limit.current.unwrap_or(UNLIMITED_AS);
    if soft < hard {
        let raised = Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => soft = hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit; keeping the soft limit")
            }
        }
    }
    FdBudget {
        soft,
        hard,
        open: open_fds(),
    }
}

/// Descriptors open now (`/proc/self/fd`); 0 where that cannot be read.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// Descriptors this site needs besides any listener: [`BASE_RESERVE`], one connection per
/// device (TCP) or bus (RTU), and a few per uplink (HTTP connection pool, DNS, platform).
pub fn reserve_for(devices: usize, buses: usize, uplinks: usize) -> u64 {
    BASE_RESERVE + devices as u64 + buses as u64 + 8 * uplinks as u64
}

/// How many connections a listener may hold: `wanted`, or fewer when the budget left after the
/// descriptors open now and the `reserve` is smaller.
pub fn listener_share(budget: FdBudget, reserve: u64, wanted: usize) -> usize {
    let left = budget
        .soft
        .saturating_sub(budget.open.saturating_add(reserve));
    usize::try_from(left).map_or(wanted, |l| l.min(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_gets_what_is_left_after_the_reserve() {
        let budget = |soft, open| FdBudget {
            soft,
            hard: soft,
            open,
        };
        assert_eq!(listener_share(budget(1024, 20), 100, 64), 64);
        assert_eq!(listener_share(budget(256, 20), 200, 64), 36);
        assert_eq!(listener_share(budget(64, 20), 100, 64), 0);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let budget = raise_nofile();
        assert_eq!(budget.soft, budget.hard.min(1 << 20));
        assert!(budget.open > 0, "{budget:?}");
    }
}
