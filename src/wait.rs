//! `wait()` over many connections and listeners, and [`WaitSet`], the
//! reusable registry for servers that watch thousands of them.

use std::fmt;
use std::time::{Duration, Instant};

#[cfg(unix)]
use mio::unix::SourceFd;
#[cfg(unix)]
use mio::{Events, Interest, Poll, Token};

use crate::connection::{Connection, RecvHalf, Trust};
use crate::error::Result;
use crate::listener::Listener;
use crate::sys;
use crate::transport::ByteStream;

/// Something [`wait`] and [`WaitSet`] can watch: connections, receiving
/// halves, listeners, and your own types that delegate to them (an enum of a
/// listener and its connections, say).
pub trait Waitable {
    /// Ready without asking the OS: a message already buffered, a
    /// connection already accepted, or the object closed (so that the next
    /// call reports it).
    fn ready_now(&self) -> bool;
    /// What the OS watches for readiness, if the object can become ready
    /// at all. An implementation for your own type returns its inner
    /// object's source.
    fn wait_source(&self) -> Option<WaitSource<'_>>;
}

/// What the OS watches for one [`Waitable`]: a descriptor on Unix; on
/// Windows a stream (probed with a zero-byte read, as CPython's `wait()`
/// does) or an event. Only mpconn's own objects make one.
#[derive(Debug, Clone, Copy)]
pub struct WaitSource<'a>(pub(crate) sys::WaitSource<'a>);

impl<T: Trust> Waitable for Connection<T> {
    fn ready_now(&self) -> bool {
        let rx = self.receiver_ref();
        rx.has_buffered() || rx.endpoint().is_closed()
    }
    fn wait_source(&self) -> Option<WaitSource<'_>> {
        let stream = self.receiver_ref().endpoint().stream();
        Some(WaitSource(sys::WaitSource::stream(stream)))
    }
}

impl<T: Trust> Waitable for RecvHalf<T> {
    fn ready_now(&self) -> bool {
        let rx = self.receiver_ref();
        rx.has_buffered() || rx.endpoint().is_closed()
    }
    fn wait_source(&self) -> Option<WaitSource<'_>> {
        let stream = self.receiver_ref().endpoint().stream();
        Some(WaitSource(sys::WaitSource::stream(stream)))
    }
}

impl<T: Trust> Waitable for Listener<T> {
    fn ready_now(&self) -> bool {
        self.has_ready()
    }
    fn wait_source(&self) -> Option<WaitSource<'_>> {
        Some(WaitSource(self.wait_source()))
    }
}

impl<W: Waitable + ?Sized> Waitable for &W {
    fn ready_now(&self) -> bool {
        (**self).ready_now()
    }
    fn wait_source(&self) -> Option<WaitSource<'_>> {
        (**self).wait_source()
    }
}

impl<W: Waitable + ?Sized> Waitable for Box<W> {
    fn ready_now(&self) -> bool {
        (**self).ready_now()
    }
    fn wait_source(&self) -> Option<WaitSource<'_>> {
        (**self).wait_source()
    }
}

impl<W: Waitable + ?Sized> Waitable for &mut W {
    fn ready_now(&self) -> bool {
        (**self).ready_now()
    }
    fn wait_source(&self) -> Option<WaitSource<'_>> {
        (**self).wait_source()
    }
}

/// Waits until some of `items` are ready, or `timeout` passes, and returns
/// the indices of the ready ones (empty on timeout): CPython's
/// `multiprocessing.connection.wait`.
///
/// A connection is ready when a message or the end of stream can be read,
/// including a message already buffered inside it; a listener is ready when
/// it has work for [`Listener::try_accept`]. `Some(Duration::ZERO)` only looks.
///
/// Each call polls every item once, so its cost grows with the number of
/// items; for a server that waits on many connections again and again, use a
/// [`WaitSet`].
///
/// ```
/// use std::time::Duration;
/// let (mut a, b) = mpconn::pipe()?;
/// let (c, mut d) = mpconn::pipe()?;
/// d.send(&1u8)?;
/// let ready = mpconn::wait(&[&a as &dyn mpconn::Waitable, &c], Some(Duration::from_secs(1)))?;
/// assert_eq!(ready, [1]);
/// # drop((a, b));
/// # Ok::<(), mpconn::Error>(())
/// ```
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) when the readiness check fails.
pub fn wait(items: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let buffered: Vec<usize> = (0..items.len()).filter(|&i| items[i].ready_now()).collect();
    let polled: Vec<(usize, sys::WaitSource<'_>)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| item.wait_source().map(|s| (i, s.0)))
        .collect();
    let deadline = if buffered.is_empty() {
        timeout.and_then(|t| Instant::now().checked_add(t))
    } else {
        Some(Instant::now())
    };
    let sources: Vec<sys::WaitSource<'_>> = polled.iter().map(|&(_, s)| s).collect();
    let mut ready = vec![false; sources.len()];
    sys::wait_readable(&sources, &mut ready, deadline)?;
    let mut out = buffered;
    out.extend(
        polled
            .iter()
            .zip(&ready)
            .filter(|(_, r)| **r)
            .map(|((i, _), _)| *i),
    );
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A reusable set of waitable objects for servers that watch many of them.
///
/// The set owns its items (so that it can see messages buffered inside
/// them); reach them with [`get_mut`](Self::get_mut) by the key
/// [`insert`](Self::insert) returned. On Unix it is built on mio: a
/// [`wait`](Self::wait) costs time for the items that are or just were
/// ready, not for the idle ones, so ten thousand quiet connections cost
/// nothing per call. On Windows each wait looks at every item, as [`wait`]
/// does; a pipe's zero-byte read stays in flight between waits, so a quiet
/// pipe costs no system call.
///
/// ```
/// use std::time::Duration;
/// let mut set = mpconn::WaitSet::new()?;
/// let (a, mut b) = mpconn::pipe()?;
/// let key = set.insert(a)?;
/// b.send(&"hi")?;
/// for k in set.wait(Some(Duration::from_secs(1)))? {
///     let text: String = set.get_mut(k).unwrap().recv()?;
///     assert_eq!((k, text.as_str()), (key, "hi"));
/// }
/// # Ok::<(), mpconn::Error>(())
/// ```
pub struct WaitSet<W: Waitable> {
    os: OsSet,
    items: Vec<Option<W>>,
    free: Vec<usize>,
    /// Keys reported ready by the last wait: checked again on the next one,
    /// because the OS reports only changes (edge-triggered) and the caller
    /// may have left data unread.
    hot: Vec<usize>,
}

impl<W: Waitable> fmt::Debug for WaitSet<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitSet")
            .field("len", &self.len())
            .field("hot", &self.hot.len())
            .finish()
    }
}

impl<W: Waitable> WaitSet<W> {
    /// An empty set.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the OS poller cannot be created.
    pub fn new() -> Result<Self> {
        Ok(WaitSet {
            os: OsSet::new()?,
            items: Vec::new(),
            free: Vec::new(),
            hot: Vec::new(),
        })
    }

    /// Adds an item and returns its key. Keys of removed items are reused.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the OS refuses the registration.
    pub fn insert(&mut self, item: W) -> Result<usize> {
        let key = self.free.pop().unwrap_or(self.items.len());
        if let Some(source) = item.wait_source()
            && let Err(e) = self.os.register(key, source.0)
        {
            if key < self.items.len() {
                self.free.push(key);
            }
            return Err(e.into());
        }
        if key == self.items.len() {
            self.items.push(Some(item));
        } else {
            self.items[key] = Some(item);
        }
        // It may be ready already: look at it on the next wait.
        self.hot.push(key);
        Ok(key)
    }

    /// Removes and returns the item under `key`.
    pub fn remove(&mut self, key: usize) -> Option<W> {
        let item = self.items.get_mut(key)?.take()?;
        if let Some(source) = item.wait_source() {
            self.os.deregister(source.0);
        }
        self.free.push(key);
        self.hot.retain(|&k| k != key);
        Some(item)
    }

    /// The item under `key`.
    pub fn get(&self, key: usize) -> Option<&W> {
        self.items.get(key)?.as_ref()
    }

    /// The item under `key`, to receive from it.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut W> {
        self.items.get_mut(key)?.as_mut()
    }

    /// How many items the set holds.
    pub fn len(&self) -> usize {
        self.items.len() - self.free.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys of all items.
    pub fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.is_some())
            .map(|(k, _)| k)
    }

    /// Waits until some items are ready or `timeout` passes, and returns
    /// their keys (empty on timeout). Readiness is as for [`wait`].
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the OS poller fails.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Vec<usize>> {
        let hot = std::mem::take(&mut self.hot);
        let mut ready = self.still_ready(&hot)?;
        let deadline = match ready.is_empty() {
            true => timeout.and_then(|t| Instant::now().checked_add(t)),
            false => Some(Instant::now()),
        };
        ready.extend(self.os.wait(&self.items, deadline)?);
        ready.retain(|&k| self.get(k).is_some());
        ready.sort_unstable();
        ready.dedup();
        self.hot.clone_from(&ready);
        Ok(ready)
    }

    /// Which of `keys` are ready now, without waiting.
    fn still_ready(&self, keys: &[usize]) -> Result<Vec<usize>> {
        let mut ready = Vec::new();
        let mut sources = Vec::new();
        let mut polled = Vec::new();
        for &key in keys {
            let Some(item) = self.get(key) else { continue };
            if item.ready_now() {
                ready.push(key);
            } else if let Some(source) = item.wait_source() {
                sources.push(source.0);
                polled.push(key);
            }
        }
        if !sources.is_empty() {
            let mut flags = vec![false; sources.len()];
            sys::wait_readable(&sources, &mut flags, Some(Instant::now()))?;
            ready.extend(
                polled
                    .iter()
                    .zip(&flags)
                    .filter(|(_, r)| **r)
                    .map(|(k, _)| *k),
            );
        }
        Ok(ready)
    }
}

impl<W: Waitable> Drop for WaitSet<W> {
    fn drop(&mut self) {
        let keys: Vec<usize> = self.keys().collect();
        for key in keys {
            self.remove(key);
        }
    }
}

/// The OS side of a [`WaitSet`] on Unix: an edge-triggered mio poll.
#[cfg(unix)]
struct OsSet {
    poll: Poll,
    events: Events,
}

#[cfg(unix)]
impl OsSet {
    fn new() -> std::io::Result<OsSet> {
        Ok(OsSet {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
        })
    }

    fn register(&mut self, key: usize, source: sys::WaitSource<'_>) -> std::io::Result<()> {
        let fd = source.raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), Token(key), Interest::READABLE)
    }

    fn deregister(&mut self, source: sys::WaitSource<'_>) {
        // Deregistration fails only if the descriptor is already gone.
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&source.raw_fd()));
    }

    /// The keys whose descriptors became readable before `deadline`.
    fn wait<W>(&mut self, _items: &[Option<W>], deadline: Option<Instant>) -> Result<Vec<usize>> {
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut self.events, left) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.events.iter().map(|e| e.token().0).collect())
    }
}

/// The OS side of a [`WaitSet`] on Windows: nothing registered; each wait
/// probes every item.
#[cfg(windows)]
struct OsSet;

#[cfg(windows)]
impl OsSet {
    fn new() -> std::io::Result<OsSet> {
        Ok(OsSet)
    }

    fn register(&mut self, _key: usize, _source: sys::WaitSource<'_>) -> std::io::Result<()> {
        Ok(())
    }

    fn deregister(&mut self, _source: sys::WaitSource<'_>) {}

    fn wait<W: Waitable>(
        &mut self,
        items: &[Option<W>],
        deadline: Option<Instant>,
    ) -> Result<Vec<usize>> {
        let keyed: Vec<(usize, &W)> = items
            .iter()
            .enumerate()
            .filter_map(|(k, i)| i.as_ref().map(|i| (k, i)))
            .collect();
        let refs: Vec<&dyn Waitable> = keyed.iter().map(|(_, w)| *w as &dyn Waitable).collect();
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let ready = wait(&refs, timeout)?;
        Ok(ready.into_iter().map(|i| keyed[i].0).collect())
    }
}
