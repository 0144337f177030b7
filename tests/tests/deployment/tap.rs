//! A recording Unix-socket forwarder: put between the relay and the sentinel, it keeps
//! every byte the relay sent or received on that link, for the plaintext scan. It can also
//! hold connections back after a given count, to stop a transfer at a known point.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Every byte that crossed the tap, both directions.
#[derive(Clone, Debug, Default)]
pub struct Recording(Arc<Mutex<Vec<u8>>>);

impl Recording {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

/// The tap's gate: it lets a number of connections through, then holds every further
/// one (accepted, not forwarded) until [`Gate::open`].
#[derive(Clone)]
pub struct Gate(Arc<GateInner>);

struct GateInner {
    upstream: PathBuf,
    recording: Recording,
    state: Mutex<GateState>,
}

struct GateState {
    /// Connections still to let through; `None` once open for good.
    pass: Option<usize>,
    held: Vec<UnixStream>,
}

impl Gate {
    /// Connections accepted and held so far.
    pub fn held(&self) -> usize {
        self.0.state.lock().unwrap().held.len()
    }

    /// Forwards the held connections and every later one.
    pub fn open(&self) {
        let held = {
            let mut state = self.0.state.lock().unwrap();
            state.pass = None;
            std::mem::take(&mut state.held)
        };
        for client in held {
            self.forward(client);
        }
    }

    /// Lets `client` through or holds it, as the gate stands.
    fn admit(&self, client: UnixStream) {
        let mut state = self.0.state.lock().unwrap();
        match &mut state.pass {
            Some(0) => state.held.push(client),
            Some(n) => {
                *n -= 1;
                drop(state);
                self.forward(client);
            }
            None => {
                drop(state);
                self.forward(client);
            }
        }
    }

    fn forward(&self, client: UnixStream) {
        // Upstream not there (yet, or any more): the client sees a closed connection and
        // retries.
        let Ok(server) = UnixStream::connect(&self.0.upstream) else {
            return;
        };
        for (from, to) in [
            (client.try_clone().unwrap(), server.try_clone().unwrap()),
            (server, client),
        ] {
            let rec = self.0.recording.clone();
            std::thread::spawn(move || pump(from, to, &rec));
        }
    }
}

/// Forwards connections on `listen` to `upstream`, recording both directions.
pub fn tap(listen: &Path, upstream: PathBuf) -> Recording {
    gated_tap(listen, upstream, None).0
}

/// [`tap`], letting only the first `pass` connections through (all if `None`); the
/// others wait for [`Gate::open`].
pub fn gated_tap(listen: &Path, upstream: PathBuf, pass: Option<usize>) -> (Recording, Gate) {
    let recording = Recording::default();
    let gate = Gate(Arc::new(GateInner {
        upstream,
        recording: recording.clone(),
        state: Mutex::new(GateState {
            pass,
            held: Vec::new(),
        }),
    }));
    let listener = UnixListener::bind(listen).unwrap();
    let admit = gate.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            admit.admit(client);
        }
    });
    (recording, gate)
}

fn pump(mut from: UnixStream, mut to: UnixStream, rec: &Recording) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                rec.0.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
