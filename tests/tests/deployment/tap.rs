//! A recording Unix-socket forwarder: put between the relay and the sentinel, it keeps
//! every byte the relay sent or received on that link, for the plaintext scan.

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

/// Forwards connections on `listen` to `upstream`, recording both directions.
pub fn tap(listen: &Path, upstream: PathBuf) -> Recording {
    let recording = Recording::default();
    let listener = UnixListener::bind(listen).unwrap();
    let rec = recording.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            // Upstream not there (yet): the client sees a closed connection and retries.
            let Ok(server) = UnixStream::connect(&upstream) else {
                continue;
            };
            for (from, to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let rec = rec.clone();
                std::thread::spawn(move || pump(from, to, &rec));
            }
        }
    });
    recording
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
