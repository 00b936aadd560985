//! Network faults between real processes: each member runs in a network namespace of its own,
//! joined to the test's host by a veth pair on a bridge, with an address of its own
//! (`10.X.Y.i`, the host is `.254`). Partitions are iptables rules inside a member's
//! namespace, so a link can be cut both ways, one way only, or a member cut off from every peer
//! and from the clients, and healed again. (`tc netem` is not available on these machines;
//! root, `ip netns` and iptables are — `scripts/install-deps` installs iptables.)

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// A private network for `size` members.
pub struct Net {
    bridge: String,
    prefix: String,
    namespaces: Vec<String>,
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether this machine can build one (root, `ip`, `iptables`).
pub fn available() -> bool {
    let ok = |c: &str, a: &[&str]| {
        Command::new(c)
            .args(a)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    ok("ip", &["netns", "list"]) && ok("iptables", &["--version"]) && ok("id", &["-u"]) && {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    }
}

impl Net {
    pub fn new(size: usize) -> Result<Net> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // One /24 per network: the second octet from the process, the third from a counter.
        let prefix = format!("10.{}.{}", 100 + pid % 150, n % 250);
        let tag = format!("{}x{n}", pid % 100_000);
        let bridge = format!("tb{tag}");
        let mut net = Net {
            bridge: bridge.clone(),
            prefix: prefix.clone(),
            namespaces: Vec::new(),
        };
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{prefix}.254/24"),
            "dev",
            &bridge,
        ])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        for i in 0..size {
            let ns = format!("tn{tag}m{i}");
            let veth = format!("tv{tag}m{i}");
            run(&["ip", "netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            run(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            run(&["ip", "link", "set", &veth, "master", &bridge, "up"])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.addr(i)),
                "dev",
                "eth0",
            ])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Member `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, i + 1)
    }

    /// The host's address on this network (where clients connect from).
    pub fn host(&self) -> String {
        format!("{}.254", self.prefix)
    }

    /// The command prefix that runs a program in member `i`'s namespace.
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespaces[i]]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn iptables(&self, i: usize, rule: &[&str]) -> Result<()> {
        let mut args = vec!["ip", "netns", "exec", &self.namespaces[i], "iptables"];
        args.extend_from_slice(rule);
        run(&args)
    }

    /// Packets from `from` no longer reach `to` (the other direction still works).
    pub fn drop_one_way(&self, from: usize, to: usize) -> Result<()> {
        self.iptables(to, &["-A", "INPUT", "-s", &self.addr(from), "-j", "DROP"])
    }

    /// Nothing passes between `a` and `b`, either way.
    pub fn cut(&self, a: usize, b: usize) -> Result<()> {
        self.drop_one_way(a, b)?;
        self.drop_one_way(b, a)
    }

    /// Member `i` reaches no peer, and no peer reaches it (clients still do).
    pub fn cut_from_peers(&self, i: usize) -> Result<()> {
        for j in 0..self.namespaces.len() {
            if j != i {
                self.cut(i, j)?;
            }
        }
        Ok(())
    }

    /// Member `i` reaches no peer and no client, and none reaches it.
    pub fn isolate(&self, i: usize) -> Result<()> {
        self.cut_from_peers(i)?;
        self.iptables(i, &["-A", "INPUT", "-s", &self.host(), "-j", "DROP"])?;
        self.iptables(i, &["-A", "OUTPUT", "-d", &self.host(), "-j", "DROP"])
    }

    /// Every rule removed: the network is whole again.
    pub fn heal(&self) -> Result<()> {
        for i in 0..self.namespaces.len() {
            self.iptables(i, &["-F"])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}
