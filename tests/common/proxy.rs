//! A TCP proxy per directed link between nodes, so tests can cut and heal the network.
//!
//! Each node gets its own cluster file in which every *peer's* raft address is the
//! proxy for the link "this node → that peer". A node only dials raft addresses (it
//! listens on its own entry), so all node-to-node traffic passes through these proxies,
//! one per direction, and a test can cut any set of directed links.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

/// A proxy for one directed link. While `cut`, it drops every connection it carries
/// and refuses new ones, as a network partition would.
pub struct Proxy {
    pub addr: String,
    cut: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on `listener` and forwards each connection to `target`.
    pub fn start(listener: TcpListener, target: String) -> Proxy {
        let addr = listener.local_addr().expect("proxy address").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let (c, d) = (Arc::clone(&cut), Arc::clone(&done));
        thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) if !c.load(Ordering::Relaxed) => {
                        let _ = inbound.set_nonblocking(false);
                        if let Ok(outbound) = TcpStream::connect(&target) {
                            pump_both(inbound, outbound, Arc::clone(&c), Arc::clone(&d));
                        }
                    }
                    Ok(_) => {} // cut: the connection is closed at once
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { addr, cut, done }
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Copies bytes both ways until either side closes or the link is cut.
fn pump_both(a: TcpStream, b: TcpStream, cut: Arc<AtomicBool>, done: Arc<AtomicBool>) {
    for (from, to) in [
        (a.try_clone().expect("clone"), b.try_clone().expect("clone")),
        (b, a),
    ] {
        let (cut, done) = (Arc::clone(&cut), Arc::clone(&done));
        thread::spawn(move || pump(from, to, &cut, &done));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool, done: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let _ = to.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if cut.load(Ordering::Relaxed) || done.load(Ordering::Relaxed) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if cut.load(Ordering::Relaxed) || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
