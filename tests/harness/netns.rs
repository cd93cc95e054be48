//! A private network of two hosts for one test: network namespaces `a` and `b` joined by a
//! veth pair (10.213.0.1 in `a`, 10.213.0.2 in `b`), each with its own loopback. Needs root
//! and `ip`. The test's own thread enters `a` (so everything it starts, servers included,
//! lives there) and starts the far host's processes in `b` with `ip netns exec`; cutting the link takes the veth
//! down, as a failed switch port would: connections hang rather than being refused.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;

use nix::sched::{CloneFlags, setns};

pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);

pub struct PrivateNet {
    a: String,
    b: String,
    veth_a: String,
}

/// Whether this machine can make one: root, and `ip` from iproute2.
pub fn possible() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivateNet {
    /// Creates both namespaces and the link, up. Call before [`PrivateNet::enter_a`].
    pub fn create() -> PrivateNet {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let (a, b) = (format!("fjord-{tag}-a"), format!("fjord-{tag}-b"));
        let (veth_a, veth_b) = (format!("fa{tag}"), format!("fb{tag}"));
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&[
            "link", "add", &veth_a, "type", "veth", "peer", "name", &veth_b,
        ]);
        for (ns, dev, addr) in [(&a, &veth_a, A_ADDR), (&b, &veth_b, B_ADDR)] {
            ip(&["link", "set", dev, "netns", ns]);
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        PrivateNet { a, b, veth_a }
    }

    /// Moves the calling thread into namespace `a`. A `#[tokio::test]` runs its tasks on this
    /// one thread, so every socket the test opens, and every process it starts, is in `a`.
    pub fn enter_a(&self) {
        let ns = File::open(format!("/run/netns/{}", self.a)).expect("namespace a");
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).expect("entering namespace a");
    }

    /// `command` (program, arguments, environment) as one that runs in namespace `b`, through
    /// `ip netns exec`. Its standard streams are the caller's to set.
    pub fn in_b(&self, command: &tokio::process::Command) -> tokio::process::Command {
        let std = command.as_std();
        let mut wrapped = tokio::process::Command::new("ip");
        wrapped
            .args(["netns", "exec", &self.b])
            .arg(std.get_program())
            .args(std.get_args())
            .kill_on_drop(true);
        for (key, value) in std.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    }

    /// Cuts the link between the hosts.
    pub fn cut(&self) {
        ip(&["-n", &self.a, "link", "set", &self.veth_a, "down"]);
    }

    /// Brings the link back.
    pub fn restore(&self) {
        ip(&["-n", &self.a, "link", "set", &self.veth_a, "up"]);
    }
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the pair.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
