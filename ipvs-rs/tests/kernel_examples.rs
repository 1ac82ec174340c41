//! The examples (`examples/healthlb.rs`, `watch.rs`, `netns.rs`) run
//! against a real kernel, each in fresh network namespaces, their
//! observable effect checked. Run inside the test VM (scripts/test.sh,
//! which builds the examples next to this binary), as root.
#![cfg(feature = "kernel-tests")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::{a, TestNs};
use ipvs::{RealServer, ServiceKey, VirtualServer};

/// How long anything in these tests may take (UML is slow to start
/// processes, Python especially).
const WAIT: Duration = Duration::from_secs(60);

/// The built example `name`: `target/<profile>/examples/<name>`, next to
/// this test's `deps/` directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built: build the examples first (cargo build -p ipvs-rs --examples --features kernel-tests; scripts/test.sh does)",
        path.display()
    );
    path
}

/// A child process whose stdout lines arrive on a channel; killed on drop.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    /// Runs `cmd` inside namespace `ns` (`ip netns exec`, which execs it:
    /// the child's pid is the program's).
    fn spawn_in(ns: &TestNs, cmd: &[&str]) -> Proc {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(cmd)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ip netns exec");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("| {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `want`; returns it.
    fn expect_line(&mut self, want: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(want) => return line,
                Ok(line) => self.seen.push(line),
                Err(e) => panic!("no line with {want:?} ({e}); saw {:?}", self.seen),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill {sig}");
    }

    /// Waits for the exit (within [`WAIT`]); true when it succeeded.
    fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("process did not exit within {WAIT:?}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP listener on `addr:port` inside `ns` (Python: accepts and closes),
/// ready when this returns.
fn listener(ns: &TestNs, addr: &str, port: u16) -> Proc {
    let script = "import socket,sys\n\
                  s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n\
                  s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                  s.bind((sys.argv[1],int(sys.argv[2])))\n\
                  s.listen(64)\n\
                  print('ready',flush=True)\n\
                  while True:\n  c,_=s.accept()\n  c.close()\n";
    let port = port.to_string();
    let mut p = Proc::spawn_in(ns, &["python3", "-c", script, addr, &port]);
    p.expect_line("ready");
    p
}

/// The weight the kernel has for real server `rs` of `svc`.
fn weight(ns: &TestNs, svc: &ServiceKey, rs: &str) -> u32 {
    let (addr, port) = rs.rsplit_once(':').expect("addr:port");
    let port: u16 = port.parse().expect("port");
    ns.handle()
        .real_servers(svc)
        .expect("list real servers")
        .into_iter()
        .find(|r| r.key.addr == a(addr) && r.key.port == port)
        .unwrap_or_else(|| panic!("no real server {rs}"))
        .weight
}

fn write_config(text: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("healthlb-{}-{n}.rules", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

const LB_CONFIG: &str = "# two real servers; only :8080 has a listener at first\n\
                         -A -t 10.96.0.1:80 -s wrr\n\
                         -a -t 10.96.0.1:80 -r 10.0.2.15:8080 -m -w 3\n\
                         -a -t 10.96.0.1:80 -r 10.0.2.15:8081 -m -w 2\n";

#[test]
fn healthlb_zeroes_a_failing_real_server_and_restores_it() {
    let ns = TestNs::new();
    let vip = ServiceKey::tcp(a("10.96.0.1"), 80);
    let config = write_config(LB_CONFIG);
    let lb_path = example("healthlb");
    let mut server = listener(&ns, "10.0.2.15", 8080);
    let mut lb = Proc::spawn_in(
        &ns,
        &[
            lb_path.to_str().unwrap(),
            config.to_str().unwrap(),
            "--interval-ms",
            "200",
            "--timeout-ms",
            "300",
        ],
    );
    lb.expect_line("programmed 1 services, 2 real servers");
    // :8081 has no listener: its first probe fails.
    lb.expect_line("DOWN TCP 10.96.0.1:80 real server 10.0.2.15:8081 weight 0");
    assert_eq!(weight(&ns, &vip, "10.0.2.15:8081"), 0);
    assert_eq!(weight(&ns, &vip, "10.0.2.15:8080"), 3);

    // The port closes: weight 0; it reopens: the configured weight again.
    drop(server);
    lb.expect_line("DOWN TCP 10.96.0.1:80 real server 10.0.2.15:8080 weight 0");
    assert_eq!(weight(&ns, &vip, "10.0.2.15:8080"), 0);
    server = listener(&ns, "10.0.2.15", 8080);
    lb.expect_line("UP TCP 10.96.0.1:80 real server 10.0.2.15:8080 weight 3");
    assert_eq!(weight(&ns, &vip, "10.0.2.15:8080"), 3);
    let _second = listener(&ns, "10.0.2.15", 8081);
    lb.expect_line("UP TCP 10.96.0.1:80 real server 10.0.2.15:8081 weight 2");
    assert_eq!(weight(&ns, &vip, "10.0.2.15:8081"), 2);

    // Ctrl-C: the services are removed.
    lb.signal("-INT");
    lb.expect_line("exiting, 1 services removed");
    assert!(lb.wait_exit(), "healthlb failed");
    assert!(ns.handle().services().unwrap().is_empty());
    drop(server);
    let _ = std::fs::remove_file(config);
}

#[test]
fn healthlb_keep_leaves_its_services() {
    let ns = TestNs::new();
    let config = write_config(LB_CONFIG);
    let lb_path = example("healthlb");
    let mut lb = Proc::spawn_in(
        &ns,
        &[
            lb_path.to_str().unwrap(),
            config.to_str().unwrap(),
            "--keep",
        ],
    );
    lb.expect_line("programmed 1 services, 2 real servers");
    lb.signal("-TERM");
    lb.expect_line("exiting, services left in place");
    assert!(lb.wait_exit(), "healthlb failed");
    let dump = ns.handle().dump().unwrap();
    assert_eq!(dump.len(), 1);
    assert_eq!(dump[0].0.key, ServiceKey::tcp(a("10.96.0.1"), 80));
    assert_eq!(dump[0].1.len(), 2);
    let _ = std::fs::remove_file(config);
}

#[test]
fn watch_prints_a_rate_line_per_service_and_the_connection_rate() {
    let ns = TestNs::new();
    let vip = ServiceKey::tcp(a("10.96.0.1"), 80);
    let mut h = ns.handle();
    h.add_service(&VirtualServer::new(vip).scheduler("rr"))
        .unwrap();
    h.add_real_server(&vip, &RealServer::new(a("10.0.2.15"), 8080))
        .unwrap();
    let _server = listener(&ns, "10.0.2.15", 8080);
    let watch_path = example("watch");
    let mut watch = Proc::spawn_in(&ns, &[watch_path.to_str().unwrap(), "--interval-ms", "300"]);
    let line = watch.expect_line("TCP 10.96.0.1:80 conns/s ");
    assert!(line.contains(" (kernel cps "), "{line}");
    // One connection attempt to the virtual service from inside the
    // namespace. IPVS schedules it (that is what `conns` counts) although
    // the handshake does not complete here: a local client and a local
    // masqueraded real server have no reply path in this namespace.
    ns.exec(&[
        "python3",
        "-c",
        "import socket\ntry: socket.create_connection(('10.96.0.1', 80), 1).close()\nexcept OSError: pass",
    ]);
    // The interval that saw it has a non-zero connection rate.
    let line = watch.expect_line(" conns 1");
    assert!(
        !line.contains("conns/s 0.0 "),
        "no rate for the new connection: {line}"
    );
}

#[test]
fn netns_example_sees_the_service_only_in_its_namespace() {
    let (ns_a, ns_b) = (TestNs::new(), TestNs::new());
    let bin = example("netns");
    let run = |args: &[&str]| -> String {
        let out = Command::new(&bin)
            .args(args)
            .output()
            .expect("run netns example");
        assert!(
            out.status.success(),
            "netns {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Run from this (the VM's initial) namespace, against namespace A.
    let added = run(&[&ns_a.name, "add", "10.96.0.10:80"]);
    assert_eq!(
        added.trim(),
        format!("added TCP 10.96.0.10:80 in netns {}", ns_a.name)
    );
    assert_eq!(run(&[&ns_a.name, "list"]).trim(), "TCP 10.96.0.10:80 rr");
    assert_eq!(run(&[&ns_b.name, "list"]).trim(), "");
    assert_eq!(
        ns_a.exec(&["ipvsadm", "-Sn"]).trim(),
        "-A -t 10.96.0.10:80 -s rr"
    );
    assert_eq!(ns_b.exec(&["ipvsadm", "-Sn"]).trim(), "");
    let here = Command::new("ipvsadm")
        .arg("-Sn")
        .output()
        .expect("ipvsadm");
    assert!(
        !String::from_utf8_lossy(&here.stdout).contains("10.96.0.10:80"),
        "the service leaked into the caller's namespace"
    );
    run(&[&ns_a.name, "del", "10.96.0.10:80"]);
    assert_eq!(run(&[&ns_a.name, "list"]).trim(), "");
}
