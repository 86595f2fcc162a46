//! The attackers: silent connections that never send a byte, each opened
//! again as soon as the listener drops it, all on one mio poll.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};

/// Where the attackers connect.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// What the attackers did, readable while they run.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections open now (connected, or connecting over TCP).
    pub open: AtomicUsize,
    /// Attackers that have been open at least once.
    pub started: AtomicUsize,
    /// Connections the listener closed or reset, each opened again.
    pub dropped: AtomicU64,
    /// Attempts to connect that failed at once (a full Unix-socket backlog,
    /// no ephemeral port left), retried a moment later.
    pub refused: AtomicU64,
}

/// The running attack; stops and closes every connection when dropped.
pub struct Attack {
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

enum Silent {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Silent {
    fn open(target: &Target) -> io::Result<Silent> {
        Ok(match target {
            Target::Tcp(sa) => Silent::Tcp(TcpStream::connect(*sa)?),
            Target::Unix(path) => Silent::Unix(UnixStream::connect(path)?),
        })
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Silent::Tcp(s) => s,
            Silent::Unix(s) => s,
        }
    }

    /// Reads and discards what arrived (the listener's challenge); false
    /// once the listener has closed or reset the connection.
    fn still_open(&mut self) -> bool {
        let mut buf = [0u8; 512];
        loop {
            let read = match self {
                Silent::Tcp(s) => s.read(&mut buf),
                Silent::Unix(s) => s.read(&mut buf),
            };
            match read {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

impl Attack {
    /// Opens `count` silent connections to `target` on a thread of their own.
    pub fn start(target: Target, count: usize) -> io::Result<Attack> {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let poll = Poll::new()?;
        let thread = {
            let (counters, stop) = (counters.clone(), stop.clone());
            thread::Builder::new()
                .name("attackers".into())
                .spawn(move || run(poll, &target, count, &counters, &stop))?
        };
        Ok(Attack {
            counters,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the attack, closing every connection.
    pub fn stop(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the attackers' thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn run(
    mut poll: Poll,
    target: &Target,
    count: usize,
    counters: &Counters,
    stop: &AtomicBool,
) -> io::Result<()> {
    // Slot i is the connection registered with token i.
    let mut slots: Vec<Option<Silent>> = (0..count).map(|_| None).collect();
    let mut closed: Vec<usize> = (0..count).collect();
    let mut ever_open = vec![false; count];
    let mut events = Events::with_capacity(1024);
    while !stop.load(Ordering::SeqCst) {
        let mut still_closed = Vec::new();
        for i in closed.drain(..) {
            match Silent::open(target) {
                Ok(mut s) => {
                    poll.registry()
                        .register(s.source(), Token(i), Interest::READABLE)?;
                    slots[i] = Some(s);
                    counters.open.fetch_add(1, Ordering::Relaxed);
                    if !std::mem::replace(&mut ever_open[i], true) {
                        counters.started.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    still_closed.push(i);
                }
            }
        }
        closed = still_closed;
        // Retry refused connections soon; otherwise wake only to check `stop`.
        let timeout = if closed.is_empty() { 50 } else { 2 };
        match poll.poll(&mut events, Some(Duration::from_millis(timeout))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            let i = event.token().0;
            let Some(s) = slots[i].as_mut() else {
                continue;
            };
            if !s.still_open() {
                poll.registry().deregister(s.source())?;
                slots[i] = None;
                counters.open.fetch_sub(1, Ordering::Relaxed);
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                closed.push(i);
            }
        }
    }
    counters.open.store(0, Ordering::Relaxed);
    Ok(())
}
