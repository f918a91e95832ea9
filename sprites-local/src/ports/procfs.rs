//! What `/proc` says about processes, read for the port scanner: a process's children and
//! socket descriptors (to find who holds a listening socket), and its pid inside its own
//! PID namespace.
//!
//! Process walks spend a [`Budget`] (one unit per descriptor or thread looked at), so a
//! sprite with a million descriptors costs a scan no more than one with a few thousand.

use std::collections::{HashMap, HashSet};

use crate::runtime::ProcessTrees;

/// Work allowed for one walk of processes: one unit per descriptor link read and per
/// thread whose children are listed.
#[derive(Debug)]
pub struct Budget(usize);

impl Budget {
    /// A budget of `units`.
    pub fn new(units: usize) -> Budget {
        Budget(units)
    }

    /// Spends one unit; false (and nothing spent) when none is left.
    fn spend(&mut self) -> bool {
        if self.0 == 0 {
            return false;
        }
        self.0 -= 1;
        true
    }

    fn is_spent(&self) -> bool {
        self.0 == 0
    }
}

/// The children of process `pid` (host pids), from every one of its threads'
/// `task/TID/children`. A process that is gone has none.
fn children(pid: u32, budget: &mut Budget) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if !budget.spend() {
            break;
        }
        let path = task.path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Calls `found` with the inode of every socket descriptor process `pid` holds, as far as
/// `budget` goes.
fn socket_inodes(pid: u32, budget: &mut Budget, mut found: impl FnMut(u64)) {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return;
    };
    for fd in fds.flatten() {
        if !budget.spend() {
            return;
        }
        if let Some(inode) = std::fs::read_link(fd.path())
            .ok()
            .as_ref()
            .and_then(|t| t.to_str())
            .and_then(socket_inode)
        {
            found(inode);
        }
    }
}

/// `socket:[123]` → 123.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Who holds a socket: the process (host pid) and the root of the tree it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The holding process, as a host pid.
    pub pid: u32,
    /// The root of its tree: an exec session's leader.
    pub root: u32,
}

/// Finds, in `trees`, a process holding each socket of `wanted`, as far as `budget` goes.
/// Trees are walked parent first, so a socket shared by a parent and its children (a
/// listener inherited across `fork`) is attributed to the parent, which opened it.
pub fn find_holders(
    trees: &ProcessTrees,
    wanted: &HashSet<u64>,
    budget: &mut Budget,
) -> HashMap<u64, Holder> {
    let mut found = HashMap::new();
    let roots = match trees {
        ProcessTrees::Roots(r) => r.clone(),
        ProcessTrees::ChildrenOf(init) => children(*init, budget),
    };
    let mut seen = HashSet::new();
    'trees: for root in roots {
        let mut stack = vec![root];
        while let Some(pid) = stack.pop() {
            if found.len() == wanted.len() || budget.is_spent() {
                break 'trees;
            }
            if !seen.insert(pid) {
                continue;
            }
            socket_inodes(pid, budget, |inode| {
                if wanted.contains(&inode) {
                    found.entry(inode).or_insert(Holder { pid, root });
                }
            });
            stack.extend(children(pid, budget));
        }
    }
    found
}

/// The pid of host process `pid` as seen in its own (innermost) PID namespace: the last
/// field of `NSpid:` in its `status`.
pub fn pid_inside(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    nspid_last(&status)
}

fn nspid_last(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links_and_nspid() {
        assert_eq!(socket_inode("socket:[4711]"), Some(4711));
        assert_eq!(socket_inode("pipe:[4711]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        let status = "Name:\tpython3\nTgid:\t4130\nNSpid:\t98765\t4130\t12\nPPid:\t1\n";
        assert_eq!(nspid_last(status), Some(12));
        assert_eq!(nspid_last("Name:\tx\nNSpid:\t77\n"), Some(77));
        assert_eq!(nspid_last("Name:\tx\n"), None);
        assert_eq!(nspid_last("NSpid:\n"), None);
    }

    #[test]
    fn budgets_run_out() {
        let mut b = Budget::new(2);
        assert!(!b.is_spent());
        assert!(b.spend());
        assert!(b.spend());
        assert!(b.is_spent());
        assert!(!b.spend());
    }

    #[test]
    fn the_walk_stops_once_every_socket_is_found() {
        use std::os::fd::OwnedFd;
        use std::process::{Command, Stdio};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = socket_inode(
            std::fs::read_link(format!("/proc/self/fd/{}", {
                use std::os::fd::AsRawFd;
                l.as_raw_fd()
            }))
            .unwrap()
            .to_str()
            .unwrap(),
        )
        .unwrap();
        // Two `sleep`s; the first holds the socket (as its stdin).
        let sleep = |stdin: Stdio| {
            Command::new("sleep")
                .arg("30")
                .stdin(stdin)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let mut holder = sleep(Stdio::from(OwnedFd::from(l)));
        let mut other = sleep(Stdio::null());
        let count = |what: &str| {
            std::fs::read_dir(format!("/proc/{}/{what}", holder.id()))
                .unwrap()
                .count()
        };
        // Its descriptors (whatever else it inherited) and its threads' children lists.
        let holders_cost = count("fd") + count("task");
        let trees = ProcessTrees::Roots(vec![holder.id(), other.id()]);
        let mut budget = Budget::new(1000);
        let found = find_holders(&trees, &HashSet::from([inode]), &mut budget);
        let _ = (holder.kill(), other.kill(), holder.wait(), other.wait());
        assert_eq!(
            found.get(&inode),
            Some(&Holder {
                pid: holder.id(),
                root: holder.id()
            })
        );
        // The holder's tree only: the walk stopped before the other one.
        assert_eq!(budget.0, 1000 - holders_cost);
    }

    #[test]
    fn this_process_is_found_holding_its_own_listener() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        let inode = socket_inode(link.to_str().unwrap()).unwrap();
        let wanted = HashSet::from([inode]);
        let pid = std::process::id();
        let holders = find_holders(
            &ProcessTrees::Roots(vec![pid]),
            &wanted,
            &mut Budget::new(1 << 20),
        );
        assert_eq!(holders.get(&inode), Some(&Holder { pid, root: pid }));
        // With no budget nothing is looked at.
        let none = find_holders(
            &ProcessTrees::Roots(vec![pid]),
            &wanted,
            &mut Budget::new(0),
        );
        assert!(none.is_empty());
        assert_eq!(pid_inside(pid).map(|_| ()), Some(()));
    }
}
