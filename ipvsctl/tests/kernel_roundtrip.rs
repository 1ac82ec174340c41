//! Round trips between `ipvsctl` and the real `ipvsadm` on a real IPVS
//! kernel (run as root inside UML by `scripts/test.sh`). Each test works in
//! a network namespace of its own (IPVS state is per namespace), deleted
//! afterwards.
#![cfg(feature = "kernel-tests")]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const IPVSCTL: &str = env!("CARGO_BIN_EXE_ipvsctl");

/// Rules in the exact form `ipvsadm -Sn` prints them, covering: TCP, UDP,
/// SCTP and firewall-mark services, IPv4 and IPv6, persistence with and
/// without netmask, scheduler flags (sh, mh, generic), one-packet
/// scheduling, a persistence engine, masquerading, direct routing and
/// tunnels (ipip, gue with each checksum option, gre), a tunnelled real
/// server of the other address family, weight 0, port 0.
const RULES: &str = "\
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 10.244.1.2:8080 -m -w 1
-a -t 10.0.0.1:80 -r 10.244.1.3:80 -g -w 0
-a -t 10.0.0.1:80 -r 10.244.1.4:80 -i -w 1 --tun-type ipip
-A -t 10.0.0.5:0 -s wlc -p 100
-a -t 10.0.0.5:0 -r 10.244.1.12:0 -g -w 1
-A -t 10.0.0.6:81 -s rr -b flag-1,flag-2,flag-3
-A -t 10.0.0.7:82 -s wlc
-A -u 10.0.0.2:53 -s wrr -p 300 -M 255.255.255.0
-a -u 10.0.0.2:53 -r 10.244.1.5:53 -m -w 3
-A -u 10.0.0.4:5060 -s rr -p 30 -M 255.255.0.0 --pe sip -o -b flag-1
-a -u 10.0.0.4:5060 -r 10.244.1.9:5060 -i -w 1 --tun-type gre --tun-csum
-a -u 10.0.0.4:5060 -r 10.244.1.10:5060 -i -w 1 --tun-type gue --tun-port 7000 --tun-remcsum
-a -u 10.0.0.4:5060 -r 10.244.1.11:5060 -i -w 1 --tun-type gre --tun-nocsum
-a -u 10.0.0.4:5060 -r 10.244.1.13:5060 -i -w 2 --tun-type gue --tun-port 7001 --tun-nocsum
-A -u 10.0.0.8:53 -s rr -o
-a -u 10.0.0.8:53 -r 192.168.7.1:53 -m -w 65535
-a -u 10.0.0.8:53 -r 200.0.0.1:5353 -m -w 2
-a -u 10.0.0.8:53 -r 11.0.0.1:53 -m -w 2
-A --sctp-service 10.0.0.3:3868 -s lc
-a --sctp-service 10.0.0.3:3868 -r 10.244.1.7:3868 -m -w 1
-A -t 100.0.0.1:80 -s rr
-A -t 200.0.0.1:80 -s rr
-A -t [fd00::100]:443 -s rr -p 60 -M 64
-a -t [fd00::100]:443 -r [fd00::11]:8443 -m -w 5
-a -t [fd00::100]:443 -r 10.244.1.8:443 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum
-A -u [2001:db8::53]:53 -s sh -b sh-fallback,sh-port
-a -u [2001:db8::53]:53 -r [2001:db8::1:2]:53 -g -w 1
-A -f 7 -s sh -b sh-fallback
-a -f 7 -r 10.244.1.6:0 -g -w 1
-A -f 8 -6 -s mh -p 360 -b mh-port
-a -f 8 -6 -r [fd00::10]:0 -g -w 1
-a -f 8 -6 -r [fd00::12]:80 -m -w 1
";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace with lo, a dummy uplink with IPv4/IPv6 addresses and
/// default routes (IPVS refuses real servers it has no route to); deleted
/// on drop.
struct Netns {
    name: String,
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd`, fails the test unless it succeeds, returns its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert_ok(&out, &format!("{cmd:?}"));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "ipvsctl-rt-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        for args in [
            "link set lo up",
            "link add up0 type dummy",
            "link set up0 multicast on",
            "link set up0 up",
            "addr add 192.168.100.1/24 dev up0",
            "route add default via 192.168.100.254 dev up0",
            "-6 addr add fd00:ffff::1/64 dev up0 nodad",
            "-6 route add default via fd00:ffff::fe dev up0",
        ] {
            let mut c = Command::new("ip");
            c.args(["-n", &ns.name]).args(args.split_whitespace());
            ok(&mut c);
        }
        ns
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ipvsctl --netns PATH ARGS`.
    fn ipvsctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(IPVSCTL);
        c.arg("--netns").arg(self.path()).args(args);
        c
    }

    /// Runs `ipvsctl --netns PATH ARGS` (ARGS split at white space) and
    /// returns its output; the test fails if the command does.
    fn ctl(&self, args: &str) -> String {
        ok(&mut self.ipvsctl(&args.split_whitespace().collect::<Vec<_>>()))
    }

    /// `ip netns exec NAME ipvsadm ARGS`.
    fn ipvsadm(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, "ipvsadm"]).args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `cmd` with `input` on stdin.
fn with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// Fails the test, with the output, unless `out` is a success.
fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ipvsctl_restore_then_ipvsadm_save_prints_the_same_rules() {
    for no_batch in [false, true] {
        let ns = Netns::new();
        let args: &[&str] = if no_batch {
            &["restore", "--no-batch"]
        } else {
            &["restore"]
        };
        let out = with_stdin(&mut ns.ipvsctl(args), RULES);
        assert_ok(&out, "ipvsctl restore");
        let saved = ok(&mut ns.ipvsadm(&["-Sn"]));
        assert_eq!(
            sorted_lines(&saved),
            sorted_lines(RULES),
            "no_batch={no_batch}: ipvsadm -Sn printed:\n{saved}"
        );
    }
}

#[test]
fn ipvsadm_restore_then_ipvsctl_save_prints_the_same_rules() {
    let ns = Netns::new();
    let out = with_stdin(&mut ns.ipvsadm(&["-R"]), RULES);
    assert_ok(&out, "ipvsadm -R");
    let ours = ns.ctl("save");
    assert_eq!(
        sorted_lines(&ours),
        sorted_lines(RULES),
        "ipvsctl save:\n{ours}"
    );
    // Same order as well: ipvsctl sorts like ipvsadm.
    let theirs = ok(&mut ns.ipvsadm(&["-Sn"]));
    assert_eq!(ours, theirs);
}

#[test]
fn listings_match_ipvsadm_line_for_line() {
    let ns = Netns::new();
    assert_ok(&with_stdin(&mut ns.ipvsadm(&["-R"]), RULES), "ipvsadm -R");
    for (ours, theirs) in [
        (vec!["list"], vec!["-Ln"]),
        (vec!["list", "--stats"], vec!["-Ln", "--stats"]),
        (vec!["list", "--rate"], vec!["-Ln", "--rate"]),
        (vec!["list", "--thresholds"], vec!["-Ln", "--thresholds"]),
        (
            vec!["list", "--persistent-conn"],
            vec!["-Ln", "--persistent-conn"],
        ),
        (vec!["list", "--tun-info"], vec!["-Ln", "--tun-info"]),
        (
            vec!["list", "--stats", "--exact"],
            vec!["-Ln", "--stats", "--exact"],
        ),
        (
            vec!["list", "-t", "10.0.0.1:80"],
            vec!["-Ln", "-t", "10.0.0.1:80"],
        ),
        (vec!["list", "-f", "8", "-6"], vec!["-Ln", "-f", "8", "-6"]),
        (vec!["timeouts"], vec!["-Ln", "--timeout"]),
    ] {
        let a = ok(&mut ns.ipvsctl(&ours));
        let b = ok(&mut ns.ipvsadm(&theirs));
        assert_eq!(a, b, "ipvsctl {ours:?} vs ipvsadm {theirs:?}");
    }
    let info = ns.ctl("info");
    let listing = ok(&mut ns.ipvsadm(&["-Ln"]));
    assert_eq!(info.lines().next(), listing.lines().next());
}

#[test]
fn json_listing_agrees_with_the_kernel_state() {
    let ns = Netns::new();
    assert_ok(&with_stdin(&mut ns.ipvsadm(&["-R"]), RULES), "ipvsadm -R");
    let text = ns.ctl("list --json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let services = v["services"].as_array().expect("services array");
    let n_services = RULES.lines().filter(|l| l.starts_with("-A")).count();
    let n_reals = RULES.lines().filter(|l| l.starts_with("-a")).count();
    assert_eq!(services.len(), n_services);
    let reals: usize = services
        .iter()
        .map(|s| s["real_servers"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(reals, n_reals);
    let sip = services
        .iter()
        .find(|s| s["address"] == "10.0.0.4")
        .expect("10.0.0.4 listed");
    assert_eq!(sip["protocol"], "udp");
    assert_eq!(sip["persistent"], 30);
    assert_eq!(sip["netmask"], "255.255.0.0");
    assert_eq!(sip["pe"], "sip");
    assert_eq!(sip["one_packet"], true);
    assert!(sip["stats"].is_object(), "kernel sends counters");
    let gue = sip["real_servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == "10.244.1.10")
        .expect("gue server");
    assert_eq!(gue["forward"], "tunnel");
    assert_eq!(gue["tunnel"]["type"], "gue");
    assert_eq!(gue["tunnel"]["port"], 7000);
    assert_eq!(gue["tunnel"]["remcsum"], true);
    let fwm = services
        .iter()
        .find(|s| s["fwmark"] == 8)
        .expect("fwmark 8 listed");
    assert_eq!(fwm["family"], "inet6");
    assert_eq!(fwm["sched_flags"], serde_json::json!(["mh-port"]));
}

#[test]
fn a_bad_line_is_reported_with_its_number_and_nothing_is_applied() {
    let ns = Netns::new();
    let input = "-A -t 10.9.0.1:80 -s rr\n\n-a -t 10.9.0.1:80 -r 10.244.0.1:80 -m --tun-port 1\n-A -t 10.9.0.2:80 -s rr\n";
    let out = with_stdin(&mut ns.ipvsctl(&["restore"]), input);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3:"), "stderr: {err}");
    assert_eq!(ok(&mut ns.ipvsadm(&["-Sn"])), "", "nothing applied");
}

#[test]
fn a_refused_rule_is_reported_with_its_line_and_the_others_are_applied() {
    for no_batch in [false, true] {
        let ns = Netns::new();
        let input = "\
-A -t 10.9.0.1:80 -s rr
-a -t 10.9.0.1:80 -r 10.244.0.1:80 -m -w 1
-A -t 10.9.0.1:80 -s rr
-a -t 10.9.0.9:80 -r 10.244.0.1:80 -m -w 1
-A -t 10.9.0.2:80 -s nosuchsched
-A -t 10.9.0.3:80 -s wrr
";
        let args: &[&str] = if no_batch {
            &["restore", "--no-batch"]
        } else {
            &["restore"]
        };
        let out = with_stdin(&mut ns.ipvsctl(args), input);
        assert_eq!(out.status.code(), Some(1), "no_batch={no_batch}");
        let err = String::from_utf8_lossy(&out.stderr);
        for line in ["line 3:", "line 4:", "line 5:"] {
            assert!(
                err.contains(line),
                "no_batch={no_batch}, missing {line}: {err}"
            );
        }
        assert!(!err.contains("line 6:"), "{err}");
        assert!(err.contains("nosuchsched"), "{err}");
        let saved = ok(&mut ns.ipvsadm(&["-Sn"]));
        assert_eq!(
            sorted_lines(&saved),
            sorted_lines(
                "-A -t 10.9.0.1:80 -s rr\n-a -t 10.9.0.1:80 -r 10.244.0.1:80 -m -w 1\n-A -t 10.9.0.3:80 -s wrr\n"
            ),
            "no_batch={no_batch}"
        );
    }
}

#[test]
fn single_commands_add_edit_delete_zero_flush_timeouts() {
    let ns = Netns::new();
    ns.ctl("add-service -t 10.8.0.1:80 -s rr");
    ns.ctl("add-service -u [fd00::8]:53 -s wrr -p 120");
    ns.ctl("add-server -t 10.8.0.1:80 -r 10.244.8.1:8080 -m -w 2");
    ns.ctl("add-server -t 10.8.0.1:80 -r 10.244.8.2:8080 -m -x 10 -y 5");
    ns.ctl("add-server -u [fd00::8]:53 -r [fd00::9]:53 -m");
    ns.ctl("edit-service -t 10.8.0.1:80 -s lc");
    ns.ctl("edit-server -t 10.8.0.1:80 -r 10.244.8.1:8080 -m -w 7");
    ns.ctl("delete-server -t 10.8.0.1:80 -r 10.244.8.2:8080");
    let saved = ok(&mut ns.ipvsadm(&["-Sn"]));
    assert_eq!(
        sorted_lines(&saved),
        sorted_lines(
            "-A -t 10.8.0.1:80 -s lc\n-a -t 10.8.0.1:80 -r 10.244.8.1:8080 -m -w 7\n\
             -A -u [fd00::8]:53 -s wrr -p 120\n-a -u [fd00::8]:53 -r [fd00::9]:53 -m -w 1\n"
        )
    );
    // Thresholds are not in the save format: check them through the listing.
    ns.ctl("edit-server -t 10.8.0.1:80 -r 10.244.8.1:8080 -m -w 7 -x 40 -y 20");
    let thr = ok(&mut ns.ipvsadm(&["-Ln", "--thresholds", "-t", "10.8.0.1:80"]));
    assert!(
        thr.contains("  -> 10.244.8.1:8080              40         20"),
        "{thr}"
    );

    // Kernel refusals: exit 1 with the kernel's reason.
    let dup = run(&mut ns.ipvsctl(&["add-service", "-t", "10.8.0.1:80", "-s", "rr"]));
    assert_eq!(dup.status.code(), Some(1));
    let missing = run(&mut ns.ipvsctl(&["delete-server", "-t", "10.8.0.1:80", "-r", "10.1.1.1:1"]));
    assert_eq!(missing.status.code(), Some(1));
    // A usage error never reaches the kernel: exit 2.
    let usage = run(&mut ns.ipvsctl(&["add-service", "-t", "10.8.0.1"]));
    assert_eq!(usage.status.code(), Some(2));

    ns.ctl("zero");
    ns.ctl("zero -t 10.8.0.1:80");
    ns.ctl("delete-service -u [fd00::8]:53");
    assert_eq!(
        ok(&mut ns.ipvsadm(&["-Sn"])),
        "-A -t 10.8.0.1:80 -s lc\n-a -t 10.8.0.1:80 -r 10.244.8.1:8080 -m -w 7\n"
    );

    ns.ctl("timeouts set 100 20 30");
    assert_eq!(
        ok(&mut ns.ipvsadm(&["-Ln", "--timeout"])),
        "Timeout (tcp tcpfin udp): 100 20 30\n"
    );
    ns.ctl("timeouts set 0 0 45");
    assert_eq!(ns.ctl("timeouts"), "Timeout (tcp tcpfin udp): 100 20 45\n");

    ns.ctl("flush");
    assert_eq!(ok(&mut ns.ipvsadm(&["-Sn"])), "");
}

#[test]
fn sync_daemons_start_list_stop_like_ipvsadm() {
    let ns = Netns::new();
    ns.ctl("daemon start master --mcast-interface up0 --syncid 5");
    ns.ctl(
        "daemon start backup --mcast-interface up0 --syncid 6 --sync-maxlen 1400 \
         --mcast-group 224.0.0.81 --mcast-port 8849 --mcast-ttl 2",
    );
    let ours = ns.ctl("daemon list");
    let theirs = ok(&mut ns.ipvsadm(&["-Ln", "--daemon"]));
    assert_eq!(ours, theirs);
    assert!(ours.contains("backup sync daemon (mcast=up0, syncid=6, maxlen=1400, group=224.0.0.81, port=8849, ttl=2)"), "{ours}");
    ns.ctl("daemon stop master");
    let after = ns.ctl("daemon list");
    assert!(!after.contains("master"), "{after}");
    assert!(after.contains("backup"), "{after}");
    ns.ctl("daemon stop backup");
    assert_eq!(ns.ctl("daemon list"), "");
}
